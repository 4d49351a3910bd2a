(function () {
  // The dataset map (a canvas) and the image lookup; cards.js draws the image cards. Everything from the data goes
  // in through textContent or as an attribute value set by the DOM, never innerHTML.
  var el = document.getElementById('explorer-data');
  if (!el) { return; }
  var started = performance.now();             // 'explorer-ready' (User Timing): parse, index and first draw
  var E = JSON.parse(el.textContent);
  var N = E.ids.length, COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];
  var canvas = document.getElementById('map-canvas'), tip = document.getElementById('map-tip');
  var box = document.getElementById('lookup');
  var list = document.getElementById('lookup-list');
  var ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height, PAD = 12;
  var LEFT = 84, BOTTOM = 48;                  // room for the axes: their ticks and names
  canvas.dataset.plot = [LEFT, PAD, W - PAD, H - BOTTOM].join(',');  // the points' box (left, top, right, bottom)
  function range(v) {                          // a loop, not Math.min.apply: 25,000 arguments overflow some stacks
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < v.length; i++) { lo = Math.min(lo, v[i]); hi = Math.max(hi, v[i]); }
    return v.length ? [lo, hi] : [0, 1];
  }
  var rx = range(E.x), ry = range(E.y), minX = rx[0], maxX = rx[1], minY = ry[0], maxY = ry[1];
  function px(i) { return LEFT + (E.x[i] - minX) / ((maxX - minX) || 1) * (W - LEFT - PAD); }
  function py(i) { return H - BOTTOM - (E.y[i] - minY) / ((maxY - minY) || 1) * (H - BOTTOM - PAD); }
  function group(i) { return E.group_by === 'label' ? E.label[i] : E.pred[i]; }
  function mistake(i) { return E.label[i] >= 0 && E.pred[i] >= 0 && E.label[i] !== E.pred[i]; }
  function make(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    for (var a in (attrs || {})) { node.setAttribute(a, attrs[a]); }
    return node;
  }

  // Thumbnails: cell i of the sprite sheets (S.size px, S.columns a row, S.per_sheet a sheet), drawn as the sheet
  // (an <img>, created only when a hover or a card needs it: the sheets load lazily) shifted inside a clipping box.
  var S = E.sprites;
  function thumbnail(i, px, cls) {
    if (E.thumb[i]) { return make('img', null, {src: E.thumb[i], alt: 'the crop the network saw', 'class': cls}); }
    if (!S || !S.sheets.length || S.missing[String(i)] !== undefined) { return null; }
    var k = i % S.per_sheet, scale = px / S.size, box = make('div', null, {'class': 'sprite ' + cls});
    var img = make('img', null, {src: S.sheets[Math.floor(i / S.per_sheet)], alt: 'the crop the network saw'});
    box.style.width = box.style.height = px + 'px';
    img.style.width = (S.columns * S.size * scale) + 'px';
    img.style.marginLeft = (-(k % S.columns) * px) + 'px';
    img.style.marginTop = (-Math.floor(k / S.columns) * px) + 'px';
    box.appendChild(img);
    return box;
  }
  function noThumbnail(i) {
    if (S && S.missing[String(i)] !== undefined) { return 'No thumbnail: the image ' + S.missing[String(i)] + '.'; }
    if (S && S.note) { return S.note; }
    return 'No thumbnail: thumbnails are off (report.image_thumbnails: 0).';
  }

  // The axes: principal components 1 and 2, each named with its share of the variance, five ticks each.
  function share(k) { var v = (E.explained || [])[k]; return typeof v === 'number' ? (100 * v).toFixed(1) + '%' : '?'; }
  var NAMES = ['PC1 (' + share(0) + ' of variance)', 'PC2 (' + share(1) + ')'];
  canvas.setAttribute('aria-label', 'dataset map: ' + NAMES[0] + ' across, ' + NAMES[1] + ' up');
  function ticks(lo, hi) {                     // round values (1, 2 or 5 times a power of ten), four or so
    var span = hi - lo;
    if (!(span > 0)) { return [lo]; }
    var p = Math.pow(10, Math.floor(Math.log10(span / 4))), f = span / 4 / p, out = [];
    var step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
    for (var k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) { out.push(k * step); }
    return out;
  }
  function tick(v) { return String(Number(v.toPrecision(3))); }
  function axes() {
    var x0 = LEFT - 6, y0 = H - BOTTOM + 6, at, text;   // the axis lines sit just outside the points' box
    ctx.strokeStyle = '#666'; ctx.fillStyle = '#333'; ctx.lineWidth = 1; ctx.font = '12px sans-serif';
    ctx.beginPath(); ctx.moveTo(x0, PAD); ctx.lineTo(x0, y0); ctx.lineTo(W - PAD, y0); ctx.stroke();
    ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    ticks(minX, maxX).forEach(function (v) {
      at = LEFT + (v - minX) / ((maxX - minX) || 1) * (W - LEFT - PAD);
      text = tick(v);
      ctx.beginPath(); ctx.moveTo(at, y0); ctx.lineTo(at, y0 + 4); ctx.stroke();
      ctx.fillText(text, Math.min(at, W - 1 - ctx.measureText(text).width / 2), y0 + 6);
    });
    ctx.fillText(NAMES[0], LEFT + (W - LEFT - PAD) / 2, H - 18);
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    ticks(minY, maxY).forEach(function (v) {
      at = H - BOTTOM - (v - minY) / ((maxY - minY) || 1) * (H - BOTTOM - PAD);
      ctx.beginPath(); ctx.moveTo(x0 - 4, at); ctx.lineTo(x0, at); ctx.stroke();
      ctx.fillText(tick(v), x0 - 6, Math.max(at, 7));
    });
    ctx.save(); ctx.translate(16, PAD + (H - BOTTOM - PAD) / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = 'center'; ctx.fillText(NAMES[1], 0, 0); ctx.restore();
  }

  function draw() {
    ctx.clearRect(0, 0, W, H);
    axes();
    for (var i = 0; i < N; i++) {
      var g = group(i);
      ctx.fillStyle = g >= 0 ? COLOURS[g % COLOURS.length] : '#999';
      ctx.fillRect(px(i) - 2, py(i) - 2, 4, 4);
    }
    ctx.strokeStyle = '#000';
    for (var j = 0; j < N; j++) {
      if (mistake(j)) { ctx.beginPath(); ctx.arc(px(j), py(j), 4, 0, 2 * Math.PI); ctx.stroke(); }
    }
  }

  // Nearest point under the mouse, through a coarse grid of buckets: constant work per move at any N.
  var CELL = 8, grid = {};
  for (var i = 0; i < N; i++) {
    var key = Math.floor(px(i) / CELL) + ',' + Math.floor(py(i) / CELL);
    (grid[key] = grid[key] || []).push(i);
  }
  function nearest(x, y) {
    var best = -1, dist = 36, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var dx = -1; dx <= 1; dx++) {
      for (var dy = -1; dy <= 1; dy++) {
        (grid[(cx + dx) + ',' + (cy + dy)] || []).forEach(function (i) {
          var d = (px(i) - x) * (px(i) - x) + (py(i) - y) * (py(i) - y);
          if (d < dist) { dist = d; best = i; }
        });
      }
    }
    return best;
  }
  function at(e) {
    var r = canvas.getBoundingClientRect();
    return nearest((e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height);
  }
  canvas.addEventListener('mousemove', function (e) {
    var i = at(e);
    tip.textContent = '';
    tip.hidden = i < 0;
    if (i < 0) { return; }
    var pic = thumbnail(i, 96, 'tipview');
    if (pic) { tip.appendChild(pic); }
    tip.appendChild(make('div', E.ids[i]));
    tip.style.left = (e.pageX + 12) + 'px';
    tip.style.top = (e.pageY + 12) + 'px';
  });
  canvas.addEventListener('mouseleave', function () { tip.hidden = true; });
  canvas.addEventListener('click', function (e) { var i = at(e); if (i >= 0) { open(i); } });

  function open(i) { window.reportImages.open(i); }   // cards.js draws the card

  box.addEventListener('input', function () {
    var q = box.value.toLowerCase(), shown = 0;
    list.textContent = '';
    if (!q) { return; }
    for (var i = 0; i < N && shown < 20; i++) {
      if (E.ids[i].toLowerCase().indexOf(q) < 0) { continue; }
      var li = make('li', E.ids[i], {tabindex: '0', 'data-i': String(i)});
      li.addEventListener('click', (function (j) { return function () { open(j); }; })(i));
      li.addEventListener('keydown', (function (j) { return function (e) { if (e.key === 'Enter') { open(j); } }; })(i));
      list.appendChild(li);
      shown++;
    }
  });

  draw();
  performance.measure('explorer-ready', {start: started, end: performance.now()});
  // For cards.js and browser.js, which run after this script: the data and how to draw a thumbnail.
  window.reportImages = {E: E, make: make, thumbnail: thumbnail, noThumbnail: noThumbnail, mistake: mistake};
})();
