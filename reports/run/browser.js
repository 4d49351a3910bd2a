(function () {
  // The channel browser: every channel of every recorded layer, sortable and filterable; a row opens the channel.
  // Everything from the data goes in through textContent, never innerHTML. Links: #channel=<layer>:<n> opens a
  // channel, #sort=<column>:<class index>:<asc|desc> sorts (column: channel, auc, d, mean, driver).
  var el = document.getElementById('browser-data');
  if (!el) { return; }
  var B = JSON.parse(el.textContent);
  var K = B.classes.length, N = B.channel.length, LIMIT = 1024;
  var table = document.getElementById('cb-table'), detail = document.getElementById('cb-detail');
  var layerBox = document.getElementById('cb-layer'), chanBox = document.getElementById('cb-filter');
  var sort = {col: 'auc', k: 0, dir: -1};

  function make(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    for (var a in (attrs || {})) { node.setAttribute(a, attrs[a]); }
    return node;
  }
  function fmt(v, digits) { return v === null || v === undefined ? '\u2013' : Number(v).toFixed(digits); }
  function value(i, col, k) { return col === 'channel' ? B.channel[i] : B[col][k][i]; }

  B.layers.forEach(function (name, j) { layerBox.appendChild(make('option', name, {value: String(j)})); });
  // The table opens on the deepest report layer: a whole layer, every channel of it (more with 'all').
  var deepest = Math.max.apply(null, B.report_layers.map(function (n) { return B.layers.indexOf(n); }).concat([-1]));
  if (deepest >= 0) { layerBox.value = String(deepest); }

  function rows() {
    var want = layerBox.value, text = chanBox.value.trim(), out = [];
    for (var i = 0; i < N; i++) {
      if (want !== 'all' && B.layer[i] !== +want) { continue; }
      if (text !== '' && String(B.channel[i]).indexOf(text) !== 0) { continue; }
      out.push(i);
    }
    out.sort(function (a, b) {
      var x = value(a, sort.col, sort.k), y = value(b, sort.col, sort.k);
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return x === y ? a - b : (x < y ? -sort.dir : sort.dir);
    });
    return out;
  }

  var COLUMNS = [['auc', 'AUC', 3], ['d', 'd', 2], ['mean', 'mean', 4], ['driver', 'driver rank', 0]];
  function header() {
    var tr = make('tr');
    [['layer', null], ['channel', 'channel']].forEach(function (h) {
      var th = make('th', h[0]);
      if (h[1]) { th.dataset.col = h[1]; th.dataset.k = '0'; }
      tr.appendChild(th);
    });
    B.classes.forEach(function (cls, k) {
      COLUMNS.forEach(function (c) {
        var th = make('th', c[1] + ', ' + cls);
        th.dataset.col = c[0]; th.dataset.k = String(k);
        tr.appendChild(th);
      });
    });
    tr.querySelectorAll('th[data-col]').forEach(function (th) {
      th.tabIndex = 0; th.className = 'sortable';
      if (th.dataset.col === sort.col && +th.dataset.k === sort.k) { th.className += sort.dir < 0 ? ' desc' : ' asc'; }
      function go() {
        var same = sort.col === th.dataset.col && sort.k === +th.dataset.k;
        sort = {col: th.dataset.col, k: +th.dataset.k, dir: same ? -sort.dir : -1};
        draw();
      }
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { go(); } });
    });
    return tr;
  }

  function draw() {
    var list = rows();
    table.textContent = '';
    table.appendChild(header());
    list.slice(0, LIMIT).forEach(function (i) {
      var tr = make('tr', null, {'data-row': String(i), tabindex: '0'});
      tr.appendChild(make('td', B.layers[B.layer[i]]));
      tr.appendChild(make('td', B.channel[i], {'class': 'n'}));
      for (var k = 0; k < K; k++) {
        COLUMNS.forEach(function (c) { tr.appendChild(make('td', fmt(B[c[0]][k][i], c[2]), {'class': 'n'})); });
      }
      tr.addEventListener('click', function () { open(i); });
      tr.addEventListener('keydown', function (e) { if (e.key === 'Enter') { open(i); } });
      table.appendChild(tr);
    });
    document.getElementById('cb-count').textContent = list.length > LIMIT ?
      'showing ' + LIMIT + ' of ' + list.length + ' channels: choose a layer or filter by channel number for the others' :
      list.length + ' channels';
  }

  function histogram(counts, top) {
    // Bars as boxes (no SVG: the page names no URL, not even a namespace).
    var box = make('div', null, {'class': 'hist'}), most = Math.max.apply(null, counts.concat([1]));
    var bars = make('div', null, {'class': 'bars'});
    counts.forEach(function (c) {
      bars.appendChild(make('span', null, {'class': 'bar', style: 'height:' + (100 * c / most).toFixed(1) + '%',
                                           title: String(c)}));
    });
    box.appendChild(bars);
    box.appendChild(make('div', '0 to ' + fmt(top, 4) + ', ' + counts.length + ' bins', {'class': 'axis'}));
    return box;
  }

  // A channel's top images, per scope (over all images, within each class; once when they are the same: B.tops is
  // reports/run/channel_galleries.py's data): the
  // thumbnail of the crop the network saw (cell i of the map's sprite sheets, explorer.js), a ring where the channel
  // has its maximum, the file name and the channel mean; a tile opens the image's card.
  var TILE = 80;
  function galleries(layer, c, box) {
    var R = window.reportImages, G = B.tops, ch = G && G.layers && G.layers[layer] ? G.layers[layer][c] : null;
    if (!ch) {
      var args = '--layers ' + layer;
      box.appendChild(make('p', 'No images for this channel on this page: ' + layer + ' is not a report layer. ' +
        'To add them: make report RUN=<this run> ARGS="' + args + '" (or --layers all).', {'class': 'howto'}));
      return;
    }
    // ch: [over all images, [per class: its own, or 'all' when the same images]]: each gallery shown once
    var same = G.classes.filter(function (cls, k) { return ch[1][k] === 'all'; });
    var by = G.group_by === 'pred' ? 'predicted ' : 'labelled ';
    var scopes = [['top images over all images' + (same.length ? ' (the same as within ' + same.join(', ') + ')' : ''),
                   ch[0]]];
    G.classes.forEach(function (cls, k) {
      if (ch[1][k] !== 'all') { scopes.push(['top images ' + by + cls, ch[1][k]]); }
    });
    scopes.forEach(function (scope) {             // [title, [[map row, value, peak y %, peak x %], ...]]
      box.appendChild(make('div', scope[0], {'class': 'muted'}));
      var row = make('div', null, {'class': 'gallery'});
      if (!scope[1].length) { row.appendChild(make('span', 'none: no ok image in this scope', {'class': 'muted'})); }
      scope[1].forEach(function (t) {
        var id = R ? R.E.ids[t[0]] : String(t[0]), tile = make('div', null, {'class': 'gtile'});
        var a = make('a', null, {href: '#image=' + encodeURIComponent(id), title: id, 'class': 'gpic'});
        a.appendChild((R && R.thumbnail(t[0], TILE, 'gthumb')) || make('div', null, {'class': 'gthumb blank'}));
        if (t[2] !== null && t[2] !== undefined) {
          a.appendChild(make('span', null, {'class': 'peak', style: 'top:' + t[2] + '%;left:' + t[3] + '%'}));
        }
        tile.appendChild(a);
        tile.appendChild(make('div', id.split('/').slice(-2).join('/'), {'class': 'name', title: id}));  // Dog/8.jpg
        tile.appendChild(make('div', String(t[1]), {title: 'channel mean'}));
        row.appendChild(tile);
      });
      box.appendChild(row);
    });
    box.appendChild(make('p', (G.note ? G.note + ' ' : 'Ring: where the channel has its maximum in the crop the ' +
      'network saw. ') + 'Under each image: its file name and the channel mean. A tile opens the image\'s card.',
      {'class': 'muted'}));
  }

  function open(i) {
    var layer = B.layers[B.layer[i]], c = B.channel[i];
    detail.textContent = '';
    detail.appendChild(make('h3', layer + ' channel ' + c));
    var t = make('table'), head = make('tr');
    ['class', 'AUC', 'd', 'mean', 'selectivity rank', 'driver rank', 'channel means of the class'].forEach(
      function (x) { head.appendChild(make('th', x)); });
    t.appendChild(head);
    B.classes.forEach(function (cls, k) {
      var tr = make('tr', null, {'data-class': String(k)});
      [cls, fmt(B.auc[k][i], 3), fmt(B.d[k][i], 2), fmt(B.mean[k][i], 4), fmt(B.rank[k][i], 0),
       fmt(B.driver[k][i], 0)].forEach(function (x) { tr.appendChild(make('td', x)); });
      var td = make('td');
      td.appendChild(histogram(B.hist[i][k], B.top[i]));
      tr.appendChild(td);
      t.appendChild(tr);
    });
    detail.appendChild(t);
    galleries(layer, c, detail);
    history.replaceState(null, '', '#channel=' + encodeURIComponent(layer) + ':' + c);
  }

  layerBox.addEventListener('change', draw);
  chanBox.addEventListener('input', draw);
  var m = /^#sort=(\w+):(\d+):(asc|desc)$/.exec(location.hash);
  if (m) { sort = {col: m[1], k: +m[2], dir: m[3] === 'asc' ? 1 : -1}; }
  draw();
  function route() {   // #channel=<layer>:<n>, on opening the page and from links (an image card's channels)
    var want = /^#channel=([^:]+):(\d+)$/.exec(location.hash);
    if (!want) { return; }
    for (var i = 0; i < N; i++) {
      if (B.layers[B.layer[i]] === decodeURIComponent(want[1]) && B.channel[i] === +want[2]) {
        open(i);
        detail.scrollIntoView();
        break;
      }
    }
  }
  route();
  window.addEventListener('hashchange', route);
})();
