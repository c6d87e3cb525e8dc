"""Server-rendered HTML of the review queue (no JS framework; a few keyboard shortcuts)."""
from __future__ import annotations

import time
from html import escape

_CSS = """body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe3ff}main{padding:1em 1.5em;max-width:1100px}
table{border-collapse:collapse;background:#fff;width:100%}td,th{border-bottom:1px solid #e3e6ea;padding:.35em .6em;text-align:left}
.cards{display:flex;gap:1em;margin-bottom:1em}.card{background:#fff;padding:.8em 1.2em;border-radius:6px;box-shadow:0 1px 2px #0002}
.card b{font-size:1.6em;display:block}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}
section{background:#fff;padding:.8em 1em;border-radius:6px;box-shadow:0 1px 2px #0002}
button{font:inherit;padding:.4em .9em;margin:.2em;cursor:pointer}kbd{background:#eee;border:1px solid #bbb;border-radius:3px;padding:0 .3em}
.flash{background:#e7f6e7;padding:.5em 1em;border-radius:6px}.error{background:#fde8e8;padding:.5em 1em;border-radius:6px}"""


def _age(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def layout(title: str, body: str, reviewer: dict | None = None) -> str:
    who = ""
    if reviewer:
        who = (f"<span>{escape(reviewer['name'])} ({escape(reviewer['role'])})</span>"
               "<form method=post action=/logout style=margin:0><button>Log out</button></form>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)} · Loopline review</title>"
            f"<link rel=icon href=/favicon.ico><style>{_CSS}</style></head><body><header><b>Loopline review</b><a href=/>Queues</a>{who}</header>"
            f"<main>{body}</main></body></html>")


def login_page(message: str = "", kind: str = "error") -> str:
    msg = f"<p class={'error' if kind == 'error' else 'notice'}>{escape(message)}</p>" if message else ""
    return layout("Log in", f"""<h1>Log in</h1>{msg}<form method=post action=/login>
<p><label>Name <input name=name autofocus required></label></p>
<p><label>Password <input name=password type=password required></label></p><button>Log in</button></form>""")


def error_page(status: int, message: str, reviewer: dict | None) -> str:
    return layout(f"{status}", f"<h1>{status}</h1><p class=error>{escape(message)}</p><p><a href=/>Back to the queues</a></p>",
                  reviewer)


def stats_cards(stats: dict, queues) -> str:
    cards = []
    for q in queues:
        s = stats[q]
        cards.append(f"<div class=card id=stats-{q}><a href=/queue/{q}>{q}</a><b>{s['waiting']}</b>waiting · "
                     f"{s['leased']} in review · oldest {_age(s['oldest_age_seconds'])}</div>")
    return f"<div class=cards>{''.join(cards)}</div>"


def index_page(stats: dict, reviewer: dict, queues) -> str:
    return layout("Queues", "<h1>Queues</h1>" + stats_cards(stats, queues), reviewer)


def queue_page(queue: str, tasks: list[dict], stats: dict, reviewer: dict, queues, flash: str = "") -> str:
    now_ms = time.time() * 1000
    rows = []
    for t in tasks:
        p = t["prediction"]
        due = (t["due_by"] - now_ms) / 1000
        rows.append(
            f"<tr><td>{t['priority']}</td><td>{'overdue ' + _age(-due) if due < 0 else 'in ' + _age(due)}</td>"
            f"<td>{escape(t['model_name'])} {escape(t['model_version'])}</td><td>{escape(p['predicted_label'])}</td>"
            f"<td>{p['confidence']:.2f}</td><td>{escape(t['reason'])}</td><td>{escape(t['event_id'])}</td>"
            f"<td><form method=post action='/tasks/{escape(t['task_id'], quote=True)}/claim' style=margin:0>"
            f"<button class=open>Open</button></form></td></tr>")
    table = ("<table><tr><th>priority</th><th>due</th><th>model</th><th>predicted</th><th>confidence</th>"
             "<th>reason</th><th>event</th><th></th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p>Nothing waiting.</p>"
    fl = f"<p class=flash>{escape(flash)}</p>" if flash else ""
    return layout(f"{queue} queue", f"<h1>{escape(queue)} queue</h1>{fl}{stats_cards(stats, queues)}{table}", reviewer)


def _kv(values: dict | None) -> str:
    if not values:
        return "<p>—</p>"
    return "<table>" + "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in sorted(values.items())) + "</table>"


def _similar(rows: list[dict] | None) -> str:
    if not rows:
        return ""
    cells = "".join(f"<tr><td>{escape(r['event_id'])}</td><td>{r['confidence']:.3f}</td><td>{escape(r['action'])}</td>"
                    f"<td>{escape(r['corrected_label'] or '')}</td></tr>" for r in rows)
    return ("<h3>Recent answers to similar cases</h3><p class=muted>same model, predicted label and rule</p>"
            f"<table id=similar><tr><th>event</th><th>confidence</th><th>answer</th><th>label</th></tr>{cells}</table>")


def task_page(task: dict, labels: list[str], reviewer: dict) -> str:
    p, ins = task["prediction"], task["insights"]
    predicted = p["predicted_label"]
    options = "".join(f"<option value='{escape(lb, quote=True)}'>{escape(lb)}</option>"
                      for lb in labels if lb != predicted) or "<option disabled>no other label seen</option>"
    contrib = "".join(f"<tr><td>{escape(c['feature'])}</td><td>{c['contribution']:+.3f}</td></tr>"
                      for c in ins.get("top_contributions") or [])
    insights = {"rule": ins.get("rule"), "override_risk": ins.get("override_risk"),
                "drift_status": ins.get("drift_status"), "online_prediction": ins.get("online_prediction")}
    escalate = "" if task["queue"] != "analyst" else "<button name=action value=escalate id=btn-escalate><kbd>e</kbd> Escalate</button>"
    tid = escape(task["task_id"], quote=True)
    body = f"""<h1>Task {escape(task['event_id'])}</h1>
<p>{escape(task['queue'])} queue · model {escape(task['model_name'])} {escape(task['model_version'])} · priority {task['priority']}
 · reason <b>{escape(task['reason'])}</b></p>
<div class=grid><section><h2>Prediction</h2><p>label <b id=predicted>{escape(predicted)}</b> · confidence <b>{p['confidence']:.3f}</b></p>
<h3>Class probabilities</h3>{_kv(p.get('class_probabilities'))}<h3>Insights</h3>{_kv({k: v for k, v in insights.items() if v is not None})}
{'<h3>Top contributions</h3><table>' + contrib + '</table>' if contrib else ''}{_similar(task.get('similar_answers'))}</section>
<section><h2>Features</h2>{_kv(p.get('features_numeric'))}{_kv(p.get('features_categorical'))}
<h3>Risk</h3>{_kv(p.get('risk'))}<h3>Context</h3>{_kv(p.get('context'))}</section></div>
<section style=margin-top:1em><form method=post action='/tasks/{tid}/submit' id=answer>
<button name=action value=approve id=btn-approve><kbd>a</kbd> Approve {escape(predicted)}</button>
<label>Correct to <select name=corrected_label id=label>{options}</select></label>
<button name=action value=correct id=btn-correct><kbd>c</kbd> Correct</button>
<button name=action value=unsure id=btn-unsure><kbd>u</kbd> Unsure</button>{escalate}
<p><label>Note <input name=note id=note size=60 maxlength=2000></label></p></form></section>
<script>
document.addEventListener('keydown', function (e) {{
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === 'INPUT') return;
  var ids = {{a: 'btn-approve', u: 'btn-unsure', e: 'btn-escalate'}};
  if (e.key === 'c') {{
    var sel = document.getElementById('label');
    if (document.activeElement === sel) {{ document.getElementById('btn-correct').click(); }}
    else {{ sel.focus(); }}
    e.preventDefault(); return;
  }}
  if (e.key === 'Enter' && e.target.id === 'label') {{ document.getElementById('btn-correct').click(); e.preventDefault(); return; }}
  var b = ids[e.key] && document.getElementById(ids[e.key]);
  if (b) {{ b.click(); e.preventDefault(); }}
}});
</script>"""
    return layout(f"Task {task['event_id']}", body, reviewer)

