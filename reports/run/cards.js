(function () {
  // The image cards: an image's thumbnail, its answer, its Grad-CAM for each class beside the channels that pushed
  // it toward that class, and its strongest channels per layer (links to the channel browser). Grad-CAM maps and
  // contributions come in shards (cards/part-NNNNN.js, a classic script each, loaded when a card needs one: a page
  // opened from disk may not fetch, but it may load a script). Everything from the data goes in through textContent
  // or as an attribute set by the DOM, never innerHTML. #image=<id> opens a card.
  var R = window.reportImages;
  if (!R) { return; }
  var E = R.E, make = R.make, N = E.ids.length;
  var C = E.cards && E.cards.parts && E.cards.parts.length ? E.cards : null;   // reports/run/cards.py
  var card = document.getElementById('card');
  var shards = {}, waiting = {};                 // part -> its rows; part -> callbacks until it has loaded
  // viridis at five stops (the overlays' colour map): a value in [0, 1] -> [r, g, b]
  var STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  window.reportCards = function (first, data) {  // what each part calls: its first map row, its rows
    var part = Math.floor(first / C.per_part);
    shards[part] = data;                           // rows; concepts where the report found them
    (waiting[part] || []).forEach(function (f) { f(); });
    delete waiting[part];
  };
  function withShard(i, then) {
    var part = Math.floor(i / C.per_part);
    var pick = function () { var d = shards[part], j = i - part * C.per_part; then(d.rows[j], (d.concepts || [])[j]); };
    if (shards[part]) { pick(); return; }
    if (!waiting[part]) {
      waiting[part] = [];
      var s = document.createElement('script');
      s.src = C.parts[part];
      s.onerror = function () { delete waiting[part]; then(null); };
      document.head.appendChild(s);
    }
    waiting[part].push(pick);
  }

  function colour(v) {
    var x = Math.max(0, Math.min(1, v)) * (STOPS.length - 1), k = Math.min(STOPS.length - 2, Math.floor(x));
    var f = x - k;
    return STOPS[k].map(function (a, j) { return Math.round(a + f * (STOPS[k + 1][j] - a)); });
  }
  function heat(b64) {                           // a (h, w) canvas of the map over [0, 1], more opaque where higher
    var bytes = atob(b64), h = C.grid[0], w = C.grid[1];
    var canvas = make('canvas', null, {width: String(w), height: String(h), 'class': 'heat'});
    var ctx = canvas.getContext('2d'), img = ctx.createImageData(w, h);
    for (var p = 0; p < h * w; p++) {
      var v = bytes.charCodeAt(p) / 255, rgb = colour(v);
      img.data[4 * p] = rgb[0]; img.data[4 * p + 1] = rgb[1]; img.data[4 * p + 2] = rgb[2];
      img.data[4 * p + 3] = Math.round(255 * (0.1 + 0.65 * v));
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }
  function channelLink(layer, c, text) {         // opens the channel in the browser (browser.js follows #channel=)
    return make('a', text, {href: '#channel=' + encodeURIComponent(layer) + ':' + c});
  }
  function signed(v) { return (v > 0 ? '+' : '') + v; }

  function gradcams(i, box) {                    // one figure per class: the thumbnail, its Grad-CAM over it
    if (!C) {
      box.appendChild(make('p', (E.cards && E.cards.note) || 'No Grad-CAM for this run.', {'class': 'muted'}));
      return;
    }
    box.appendChild(make('p', 'Loading its Grad-CAM\u2026', {'class': 'muted'}));
    withShard(i, function (row, concepts) {
      box.textContent = '';
      if (!row) { box.appendChild(make('p', 'No Grad-CAM: its file did not load.', {'class': 'muted'})); return; }
      C.classes.forEach(function (cls, k) {
        var one = row[k], fig = make('figure', null, {'class': 'cam-fig', 'data-class': cls});   // [max, map, top]
        if (!one) { fig.appendChild(make('p', 'No Grad-CAM of ' + cls + ' for this image.', {'class': 'muted'}));
                    box.appendChild(fig); return; }
        var pic = make('div', null, {'class': 'cam-pic'});
        pic.appendChild(R.thumbnail(i, 160, 'view') || make('div', null, {'class': 'view blank'}));
        if (one[0] > 0) { pic.appendChild(heat(one[1])); }
        fig.appendChild(pic);
        fig.appendChild(make('figcaption', one[0] > 0 ?
          'Grad-CAM of \u201c' + cls + '\u201d at ' + C.layer + ' (0 to ' + one[0] + ')' :
          'Grad-CAM of \u201c' + cls + '\u201d: no positive evidence at ' + C.layer));
        var p = make('p', 'pushed toward ' + cls + ': ');
        one[2].forEach(function (pair, j) {     // [channel, contribution]
          if (j) { p.appendChild(document.createTextNode(', ')); }
          p.appendChild(channelLink(C.layer, pair[0], 'c' + pair[0]));
          p.appendChild(document.createTextNode(' (' + signed(pair[1]) + ')'));
        });
        if (!one[2].length) { p.appendChild(document.createTextNode('\u2013')); }
        fig.appendChild(p);
        if (concepts && concepts[k] && concepts[k].length) {   // [[concept number, contribution, presence], ...]
          fig.appendChild(make('p', 'concepts of ' + cls + ' here: ' + concepts[k].map(function (c) {
            return '#' + c[0] + ' (' + signed(c[1]) + ')'; }).join(', '),
            {'class': 'concepts'}));
        }
        box.appendChild(fig);
      });
    });
  }

  function name(k) { return k >= 0 ? E.classes[k] : '\u2013'; }
  function pairs(p, layer, flat) {               // c12 (0.53), ...: each channel a link to the browser
    for (var j = 0; j < flat.length; j += 2) {
      if (j) { p.appendChild(document.createTextNode(', ')); }
      p.appendChild(channelLink(layer, flat[j], 'c' + flat[j]));
      p.appendChild(document.createTextNode(' (' + flat[j + 1] + ')'));
    }
  }
  function open(i) {
    card.textContent = '';
    card.appendChild(make('h3', E.ids[i]));
    var facts = 'label ' + name(E.label[i]) + ', predicted ' + name(E.pred[i]) + '; ' + E.classes.map(
      function (c, k) { return 'P(' + c + ') ' + (E.probs[k][i] === null ? '\u2013' : E.probs[k][i]); }).join(', ');
    card.appendChild(make('p', facts, {'class': R.mistake(i) ? 'mistake' : ''}));
    var row = make('div', null, {'class': 'cam-row'});
    var own = make('figure', null, {'class': 'cam-fig'});
    own.appendChild(R.thumbnail(i, 160, 'view') || make('p', R.noThumbnail(i), {'class': 'muted nothumb'}));
    own.appendChild(make('figcaption', 'the crop the network saw'));
    row.appendChild(own);
    var cams = make('div', null, {'class': 'cam-row'});
    row.appendChild(cams);
    card.appendChild(row);
    gradcams(i, cams);
    E.top_layers.forEach(function (layer) {
      var t = E.tops[layer][i], p = make('p');
      p.appendChild(make('b', layer + ': '));
      p.appendChild(document.createTextNode('highest '));
      pairs(p, layer, t[0]);
      p.appendChild(document.createTextNode('; most unusual for its class (z) '));
      if (t[1].length) { pairs(p, layer, t[1]); } else { p.appendChild(document.createTextNode('\u2013')); }
      card.appendChild(p);
    });
    history.replaceState(null, '', '#image=' + encodeURIComponent(E.ids[i]));
  }
  R.open = open;

  function route() {
    var want = /^#image=(.+)$/.exec(location.hash);
    if (!want) { return; }
    var id = decodeURIComponent(want[1]);
    for (var k = 0; k < N; k++) { if (E.ids[k] === id) { open(k); card.scrollIntoView(); break; } }
  }
  route();
  window.addEventListener('hashchange', route);
})();
