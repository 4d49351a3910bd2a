(function(){
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var box = document.getElementById('filter');
  box.addEventListener('input', function(){
    var q = box.value.toLowerCase();
    document.querySelectorAll('.tile[data-i]').forEach(function(el){
      el.hidden = q !== '' && data.ids[+el.dataset.i].toLowerCase().indexOf(q) < 0;
    });
  });
})();
