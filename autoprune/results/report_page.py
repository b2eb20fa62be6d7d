"""The report page's own style sheet and script: clicking a point or a row opens the trial's
card (its figures, kept channels and export command); clicking a column head sorts the table.
Kept apart from report.py, which computes the data and draws the figures."""

SCRIPT = """
const DATA = JSON.parse(document.getElementById('report-data').textContent);
const FIGURES = JSON.parse(document.getElementById('figures').textContent);
const byNumber = Object.fromEntries(DATA.trials.map(t => [t.number, t]));
const fmt = (v, d) => (v === null || v === undefined) ? '–' : Number(v).toFixed(d);
const METRIC = DATA.metric;  // the study's metric: a percentage (top-1) or a plain number
const metric = v => (v === null || v === undefined) ? '–' :
  METRIC.percent ? fmt(100 * v, 2) + ' %' : Number(v).toPrecision(4);
for (const [id, fig] of Object.entries(FIGURES)) {
  Plotly.newPlot(id, fig.data, fig.layout, {responsive: true, displaylogo: false});
}
function showCard(number) {
  const t = byNumber[number];
  if (!t) return;
  const base = DATA.baseline;
  const card = document.getElementById('card');
  const p = t.params_searched;
  const rows = [
    ['status', t.status + (t.reference ? ' (' + t.reference + ')' : '')],
    [METRIC.name, t.accuracy === null ? '–' : metric(t.accuracy) + ' (unpruned ' + metric(base.accuracy) + ')'],
    ['latency', fmt(t.latency_ms, 3) + ' ms, speedup ' + fmt(t.speedup, 2) + 'x (predicted ' +
     fmt(t.predicted_latency_ms, 3) + ' ms)'],
    ['memory', fmt(t.memory_mb, 1) + ' MiB (unpruned ' + fmt(base.memory_mb, 1) + ' MiB)'],
    ['MACs', t.macs === null ? '–' : fmt(t.macs / 1e6, 2) + ' M, ' + fmt(base.macs / t.macs, 2) + 'x fewer'],
    ['parameters', t.params === null ? '–' : fmt(t.params / 1e6, 3) + ' M, ' + fmt(base.params / t.params, 2) + 'x fewer'],
    ['criterion', p.criterion || '–'],
    ['distillation', 'alpha ' + fmt(p.kd_alpha, 2) + ', temperature ' + fmt(p.kd_temperature, 2)],
    ['learning rate', p.lr === undefined ? '–' : Number(p.lr).toExponential(2)],
    ['precision', (p.precision || 'fp32') + (t.fp32_accuracy === null ? '' :
      ' (quantized after fine-tuning; ' + metric(t.fp32_accuracy) + ' before)')],
    ['trial time', fmt(t.seconds, 1) + ' s'],
  ];
  const full = t.full_finetune;
  if (full) rows.splice(2, 0, ['full fine-tune', metric(full.accuracy) + ' after ' +
    full.epochs + ' epochs (best epoch ' + full.best_epoch + '; brief fine-tune ' +
    metric(full.brief_accuracy) + ', ' + fmt(full.seconds, 0) + ' s)']);
  if (t.note) rows.push(['note', t.note]);
  const cli = DATA.commands.cli.replaceAll('{trial}', number);
  const py = DATA.commands.python.replaceAll('{trial}', number);
  card.innerHTML = '<h3>Trial ' + number + '</h3><table class="card">' +
    rows.map(r => '<tr><th>' + r[0] + '</th><td>' + String(r[1]).replace(/</g, '&lt;') + '</td></tr>').join('') +
    '</table><div id="layers"></div><p>Export this model:</p><pre class="cmd">' +
    cli.replace(/</g, '&lt;') + '</pre><pre class="cmd">' + py.replace(/</g, '&lt;') + '</pre>';
  card.style.display = 'block';
  if (t.kept_channels) {
    const kept = t.kept_channels.map((k, i) => DATA.base_channels[i] ? k / DATA.base_channels[i] : 1);
    Plotly.newPlot('layers', [{x: DATA.layers, y: kept, type: 'bar',
      text: t.kept_channels.map((k, i) => k + ' / ' + DATA.base_channels[i]),
      hovertemplate: '%{x}: %{text} kept<extra></extra>'}],
      {title: 'Kept channels per layer', yaxis: {title: 'fraction kept', range: [0, 1.05]},
       height: 300, margin: {b: 120}, template: 'plotly_white'}, {displaylogo: false});
  }
  document.querySelectorAll('#trials tr.selected').forEach(r => r.classList.remove('selected'));
  const row = document.querySelector('#trials tr[data-trial="' + number + '"]');
  if (row) row.classList.add('selected');
}
for (const id of ['pareto-latency', 'pareto-memory']) {
  document.getElementById(id).on('plotly_click', ev => {
    const point = ev.points[0];
    if (point && point.customdata !== undefined) showCard(point.customdata);
  });
}
document.querySelectorAll('#trials tbody tr').forEach(r =>
  r.addEventListener('click', () => showCard(Number(r.dataset.trial))));
document.querySelectorAll('#trials th').forEach(th => th.addEventListener('click', () => {
  const col = Number(th.dataset.col), body = document.querySelector('#trials tbody');
  const asc = th.dataset.order !== 'asc';
  th.dataset.order = asc ? 'asc' : 'desc';
  const key = r => { const v = r.children[col].textContent; const n = parseFloat(v);
                     return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    const c = (typeof x === typeof y) ? (x > y) - (x < y) : (typeof x === 'number' ? -1 : 1);
    return asc ? c : -c; }).forEach(r => body.appendChild(r));
}));
"""

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;color:#222}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px}
#trials th{cursor:pointer;background:#f4f4f4;position:sticky;top:0}
#trials tr{cursor:pointer}tr.front{background:#e8f1fb}tr.selected{outline:2px solid #1f77b4}
tr.failed,tr.infeasible,tr.not-fine-tuned{color:#a33}
#card{display:none;border:1px solid #1f77b4;border-radius:6px;padding:.5em 1em;margin:1em 0}
table.card th{text-align:left;background:#f7f7f7}pre.cmd{background:#f4f4f4;padding:.5em;overflow-x:auto}
.summary td{padding:2px 10px}.scroll{max-height:600px;overflow:auto}
.settings-groups{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:0 2em;align-items:start}
.settings-groups .wide{grid-column:1/-1}table.settings{width:100%}
table.settings th{text-align:left;background:#f7f7f7;font-weight:normal;white-space:nowrap;width:1%}
table.settings td{word-break:break-word}
"""
