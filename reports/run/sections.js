(function () {
  // Sections collapse (<details>); a link into a closed one opens it first, so that it can scroll into view:
  // #<section>, #channel=<layer>:<n> (the channel browser), #image=<id> (the map's card). Runs before the browser's
  // and the map's scripts, which follow the same links.
  var OWNER = {channel: 'browser', image: 'map'};
  function reveal() {
    var hash = location.hash.slice(1), key = /^(\w+)=/.exec(hash);
    var target = document.getElementById(key ? OWNER[key[1]] || '' : decodeURIComponent(hash));
    var box = target && target.closest('details');
    if (box && !box.open) { box.open = true; }
    if (target && !key) { target.scrollIntoView(); }
  }
  reveal();
  window.addEventListener('hashchange', reveal);
})();
