(function () {
  // The channel browser: every channel of every recorded layer, sortable and filterable; a row opens the channel.
  // Everything from the data goes in through textContent, never innerHTML. Links: #channel=<layer>:<n> opens a
  // channel, #sort=<column>:<class index>:<asc|desc> sorts (column: channel, auc, d, mean, driver).
  var el = document.getElementById('browser-data');
  if (!el) { return; }
  var B = JSON.parse(el.textContent);
  var K = B.classes.length, N = B.channel.length, LIMIT = 300;
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
      'showing ' + LIMIT + ' of ' + list.length + ' channels: filter by layer or channel number to see the others' :
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
    var shown = B.galleries[i];
    if (shown.length) {
      var p = make('p', 'Galleries of this channel: ');
      shown.forEach(function (g) { p.appendChild(make('a', 'most selective for ' + g[0], {href: '#' + g[1]})); });
      detail.appendChild(p);
    } else {
      var best = Math.min.apply(null, B.rank.map(function (r) { return r[i] === null ? Infinity : r[i]; }));
      var args = (B.report_layers.indexOf(layer) < 0 ? '--layers ' + layer + ' ' : '') + '--set top_channels=' +
        (isFinite(best) ? best : 1);
      detail.appendChild(make('p', 'No tiles for this channel on this page: it is not among the top channels of ' +
        'a gallery. To draw them: make report RUN=<this run> ARGS="' + args + '"', {'class': 'howto'}));
    }
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
