"""The workbench pages: a queue page with counts, paging, filters and search, and a task page
built for answering all day (keys for every answer, the next task after each answer).

Guarantees: every value shown is HTML-escaped; keyboard shortcuts never fire while a form
control (INPUT, SELECT, TEXTAREA) has focus; no label is pre-selected in "Correct to".
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from html import escape
from urllib.parse import urlencode

from loopline.connectors.review import format as fmt
from loopline.connectors.review.pages import _age, layout, stats_cards
from loopline.connectors.review.store import QueueFilter

FAVICON = (b"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='16' rx='3' "
           b"fill='#1d2330'/><path d='M4 8.5l2.5 2.5L12 5' stroke='#cfe3ff' stroke-width='2' fill='none'/></svg>")

_CSS = """.muted{color:#5b6475}.notice{background:#eef3fb;padding:.5em 1em;border-radius:6px}
.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin:.6em 0}.filters label{display:flex;flex-direction:column;font-size:.85em}
.pager{margin:.6em 0;display:flex;gap:1em;align-items:center}.badge{background:#e8ecf3;border-radius:3px;padding:0 .35em;font-size:.85em}
.badge.audit{background:#fff1c9}.badge.esc{background:#fde8e8}.escalation{background:#fff6e0;border-left:4px solid #e0a400;padding:.6em 1em;margin:.6em 0;border-radius:4px}
.thread p{margin:.2em 0}.keys{font-size:.9em;color:#3a4252}.guidelines{background:#eef6ee;padding:.6em 1em;border-radius:6px;white-space:pre-wrap;margin:.6em 0}
.labels kbd{margin-left:.5em}.labels .pred{color:#8a93a3}td.num{text-align:right}.meta span{margin-right:1.2em}"""


@dataclass(frozen=True)
class QueueQuery:
    """Paging and filters of a queue page, read from (and written back to) the query string."""

    page: int = 1
    page_size: int = 50
    filters: QueueFilter = QueueFilter()

    @classmethod
    def from_query(cls, query, page_size: int) -> QueueQuery:
        try:
            page = max(1, min(10_000, int(query.get("page", "1"))))
        except ValueError:
            page = 1
        f = QueueFilter(**{k: str(query.get(k, ""))[:200].strip() for k in ("model", "reason", "kind", "due", "event_id")})
        return cls(page, page_size, f)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def params(self, **extra) -> dict:
        f = self.filters
        out = {k: v for k, v in (("model", f.model), ("reason", f.reason), ("kind", f.kind), ("due", f.due),
                                 ("event_id", f.event_id)) if v}
        if self.page > 1:
            out["page"] = str(self.page)
        out.update({k: v for k, v in extra.items() if v})
        return out

    def query_string(self, **extra) -> str:
        return urlencode(self.params(**extra))


def _due(due_by_ms: float, now_ms: float) -> str:
    d = (due_by_ms - now_ms) / 1000
    return f"overdue {_age(-d)}" if d < 0 else f"in {_age(d)}"


def _clock(ms: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ms / 1000))


def _select(name: str, current: str, choices: list[tuple[str, str]]) -> str:
    opts = "".join(f"<option value='{escape(v, quote=True)}'{' selected' if v == current else ''}>{escape(t)}</option>"
                   for v, t in choices)
    return f"<select name={name} id=f-{name}>{opts}</select>"


def counters_line(c: dict) -> str:
    def share(agree: int, n: int) -> str:
        return f"{fmt.percent(agree / n)} ({agree} of {n})" if n else "not yet measured"
    return (f"<p id=counters class=muted>You today: <b>{c['answered']}</b> answered · agreement with other reviewers "
            f"{share(c['agree_others'], c['compared_others'])} · on audit samples "
            f"{share(c['agree_audits'], c['compared_audits'])}</p>")


def queue_page(queue: str, tasks: list[dict], total: int, q: QueueQuery, facets: dict, stats: dict, reviewer: dict,
               queues, counters: dict, flash: str = "") -> str:
    now_ms = time.time() * 1000
    f = q.filters
    rows = []
    for i, t in enumerate(tasks, start=q.offset + 1):
        p = t["prediction"]
        badges = ""
        if t.get("audit"):
            badges += " <span class='badge audit'>audit</span>"
        if t.get("escalation"):
            badges += f" <span class='badge esc'>escalated by {escape(t['escalation'].get('by', ''))}</span>"
        rows.append(
            f"<tr><td class=num>{i}</td><td>{_due(t['due_by'], now_ms)}</td><td class=num>{t['priority']}</td>"
            f"<td>{escape(t['model_name'])} {escape(t['model_version'])}</td><td>{escape(p['predicted_label'])}</td>"
            f"<td class=num>{fmt.percent(p['confidence'])}</td><td>{escape(t['reason'])}{badges}</td>"
            f"<td>{escape(t['event_id'])}</td>"
            f"<td><form method=post action='/tasks/{escape(t['task_id'], quote=True)}/claim' style=margin:0>"
            f"<button class=open>Open</button></form></td></tr>")
    table = ("<table id=tasks><tr><th>#</th><th>due</th><th>priority</th><th>model</th><th>predicted</th>"
             "<th>confidence</th><th>reason</th><th>event</th><th></th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p>Nothing waiting" + (" that matches these filters" if f.active() else "") + ".</p>"
    first, last = (q.offset + 1, q.offset + len(tasks)) if tasks else (0, 0)
    pager = f"<span id=count>{first}–{last} of {total}</span>" if tasks else f"<span id=count>0 of {total}</span>"
    if q.page > 1:
        pager += f" <a id=prev href='/queue/{queue}?{escape(replace(q, page=q.page - 1).query_string())}'>← previous</a>"
    if last < total:
        pager += f" <a id=next href='/queue/{queue}?{escape(replace(q, page=q.page + 1).query_string())}'>next →</a>"
    filters = (
        f"<form class=filters method=get action=/queue/{queue} id=filters>"
        f"<label>Model{_select('model', f.model, [('', 'any')] + [(m, m) for m in facets.get('model', [])])}</label>"
        f"<label>Reason{_select('reason', f.reason, [('', 'any')] + [(r, r) for r in facets.get('reason', [])])}</label>"
        f"<label>Kind{_select('kind', f.kind, [('', 'any'), ('audit', 'audit samples'), ('regular', 'routed')])}</label>"
        f"<label>Due{_select('due', f.due, [('', 'any'), ('overdue', 'overdue'), ('hour', 'within an hour')])}</label>"
        f"<label>Event id<input name=event_id id=f-event_id value='{escape(f.event_id, quote=True)}' size=18></label>"
        "<button>Filter</button>" + (f" <a href=/queue/{queue}>clear</a>" if f.active() else "") + "</form>")
    start = (f"<p><a id=start class=start href='/queue/{queue}/next?{escape(q.query_string())}'><button>"
             f"Start reviewing — most urgent first <kbd>n</kbd></button></a></p>") if total else ""
    fl = f"<p class=flash>{escape(flash)}</p>" if flash else ""
    script = """<script>document.addEventListener('keydown', function (e) {
  var t = e.target.tagName; if (e.ctrlKey || e.metaKey || e.altKey || t === 'INPUT' || t === 'SELECT' || t === 'TEXTAREA') return;
  if (e.key === 'n' && document.getElementById('start')) { document.getElementById('start').click(); e.preventDefault(); }
});</script>"""
    body = (f"<style>{_CSS}</style><h1>{escape(queue)} queue</h1>{fl}{stats_cards(stats, queues)}{counters_line(counters)}"
            f"{start}{filters}<div class=pager>{pager}</div>{table}<p class=muted>Order: most urgent first — due time "
            f"minus one minute per priority point; audit samples carry their own due time.</p>{script}")
    return layout(f"{queue} queue", body, reviewer)


def _kv(values: dict | None, table_id: str = "") -> str:
    if not values:
        return ""
    ident = f" id={table_id}" if table_id else ""
    return f"<table{ident}>" + "".join(
        f"<tr><th>{escape(fmt.label(str(k)))}</th><td>{escape(fmt.value(str(k), v))}</td></tr>"
        for k, v in sorted(values.items())) + "</table>"


def _section(title: str, inner: str) -> str:
    return f"<h3>{escape(title)}</h3>{inner}" if inner else ""


def _escalation(task: dict, now_ms: float) -> str:
    esc = task.get("escalation")
    if not esc:
        return ""
    note = esc.get("note") or ""
    return (f"<div class=escalation id=escalation><b>Escalated by {escape(esc.get('by', ''))}</b> "
            f"{_age(max(0.0, (now_ms - esc.get('at', now_ms)) / 1000))} ago · "
            f"original reason <b>{escape(esc.get('original_reason', ''))}</b> "
            f"(priority {esc.get('original_priority', '')})"
            + (f"<p id=escalation-note>“{escape(note)}”</p>" if note else "<p class=muted>no note</p>") + "</div>")


def _thread(task: dict, now_ms: float) -> str:
    notes = task.get("notes") or []
    if not notes:
        return ""
    items = "".join(f"<p><b>{escape(n.get('by', ''))}</b> ({escape(n.get('action', ''))}, "
                    f"{_age(max(0.0, (now_ms - n.get('at', now_ms)) / 1000))} ago): {escape(n.get('text', ''))}</p>"
                    for n in notes)
    return f"<section class=thread id=thread><h3>Notes</h3>{items}</section>"


def task_page(task: dict, labels: list[str], contract, reviewer: dict, q: QueueQuery, flash: str = "") -> str:
    now_ms = time.time() * 1000
    p, ins = task["prediction"], task.get("insights") or {}
    predicted = p["predicted_label"]
    other = fmt.other_label(labels, predicted)
    choices = [(i, lb) for i, lb in enumerate(labels[:9], start=1)]
    options = "<option value='' selected disabled>— choose a label —</option>" + "".join(
        f"<option value='{escape(lb, quote=True)}'{' disabled' if lb == predicted else ''}>{i} · {escape(lb)}"
        f"{' (predicted)' if lb == predicted else ''}</option>" for i, lb in choices)
    key_labels = " ".join(f"<span class={'pred' if lb == predicted else 'lab'}><kbd>{i}</kbd> {escape(lb)}</span>"
                          for i, lb in choices)
    contrib = "".join(f"<li>{escape(fmt.contribution(c, p.get('features_numeric'), predicted, other))}</li>"
                      for c in ins.get("top_contributions") or [])
    insight_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                           for k, v in fmt.insight_rows(ins, labels, predicted))
    probs = p.get("class_probabilities") or {}
    prob_rows = "".join(f"<tr><th>{escape(k)}</th><td>{fmt.percent(v)}</td></tr>"
                        for k, v in sorted(probs.items(), key=lambda kv: -kv[1])) if probs else ""
    escalate = "" if task["queue"] != "analyst" else \
        "<button type=button id=btn-escalate><kbd>e</kbd> Escalate (type a note, Enter)</button>"
    tid = escape(task["task_id"], quote=True)
    qs = escape(q.query_string())
    age = (now_ms - p.get("emitted_at", now_ms)) / 1000
    guidelines = f"<div class=guidelines id=guidelines><b>Guidelines</b>\n{escape(contract.guidelines)}</div>" \
        if contract.guidelines else ""
    declared = "" if contract.declared else \
        "<p class=muted>This model declares no label set: the labels offered are those seen so far.</p>"
    fl = f"<p class=flash>{escape(flash)}</p>" if flash else ""
    body = f"""<style>{_CSS}</style>{fl}<h1>Task {escape(task['event_id'])}</h1>
{_escalation(task, now_ms)}{_thread(task, now_ms)}
<p class=meta><span>{escape(task['queue'])} queue</span><span>model {escape(task['model_name'])} {escape(task['model_version'])}</span>
<span>reason <b>{escape(task['reason'])}</b>{' · audit sample' if task.get('audit') else ''}</span><span>priority {task['priority']}</span>
<span id=due>due <b>{_due(task['due_by'], now_ms)}</b> ({_clock(task['due_by'])})</span>
<span id=age>prediction made {_age(max(0.0, age))} ago</span></p>{guidelines}
<section style=margin-bottom:1em><form method=post action='/tasks/{tid}/submit?{qs}' id=answer>
<input type=hidden name=action id=action value=''>
<button type=button id=btn-approve><kbd>a</kbd> Approve {escape(predicted)}</button>
<label>Correct to <select name=corrected_label id=label>{options}</select></label>
<button type=button id=btn-correct>Correct</button>
<button type=button id=btn-unsure><kbd>u</kbd> Unsure</button>{escalate}
<p><label>Note <input name=note id=note size=60 maxlength=2000></label></p>
<p class=keys id=keys>Keys: <kbd>a</kbd> approve · correct to {key_labels} (or <kbd>c</kbd>, arrows, Enter) · <kbd>u</kbd> unsure{' · <kbd>e</kbd> escalate' if escalate else ''}
 · <kbd>/</kbd> write a note · <kbd>Esc</kbd> leave a field · <kbd>l</kbd> back to the list. After each answer the next task opens.</p>
<p id=hint class=muted></p></form>
<form method=post action='/tasks/{tid}/release' id=release style=margin:0><button id=btn-list>Back to the list (gives this task back)</button></form>
</section>{declared}
<div class=grid><section><h2>Prediction</h2><p>label <b id=predicted>{escape(predicted)}</b> · confidence <b>{fmt.percent(p['confidence'])}</b></p>
{_section('Class probabilities', f'<table id=probs>{prob_rows}</table>' if prob_rows else '')}
{_section('What the models say', f'<table id=insights>{insight_rows}</table>' if insight_rows else '')}
{_section('Why (top contributions of the online model)', f'<ul id=contrib>{contrib}</ul>' if contrib else '')}
{_similar(task.get('similar_answers'))}</section>
<section><h2>Case</h2>{_section('Features', _kv(p.get('features_numeric'), 'features') + _kv(p.get('features_categorical')))}
{_section('Risk', _kv(p.get('risk'), 'risk'))}{_section('Context', _kv(p.get('context'), 'context'))}</section></div>
<script>
(function () {{
  var form = document.getElementById('answer'), sel = document.getElementById('label'), note = document.getElementById('note');
  var labels = {_js_list([lb for _, lb in choices])}, predicted = {_js_str(predicted)}, pending = null;
  function hint(t) {{ document.getElementById('hint').textContent = t; }}
  function send(action) {{
    if (action === 'correct' && !sel.value) {{ hint('Choose the correct label first: press its number.'); return; }}
    document.getElementById('action').value = action; form.submit();
  }}
  document.getElementById('btn-approve').onclick = function () {{ send('approve'); }};
  document.getElementById('btn-correct').onclick = function () {{ send('correct'); }};
  document.getElementById('btn-unsure').onclick = function () {{ send('unsure'); }};
  var esc = document.getElementById('btn-escalate');
  if (esc) esc.onclick = function () {{ pending = 'escalate'; note.focus(); hint('Why? Type a note and press Enter to escalate (Esc cancels).'); }};
  note.addEventListener('keydown', function (e) {{
    if (e.key === 'Enter') {{ e.preventDefault(); if (pending) send(pending); else hint('Press a, a number, u or e after leaving the note (Esc).'); }}
    if (e.key === 'Escape') {{ pending = null; note.blur(); hint(''); }}
  }});
  sel.addEventListener('keydown', function (e) {{
    if (e.key === 'Escape') sel.blur();
    if (e.key === 'Enter') {{ e.preventDefault(); send('correct'); }}
  }});
  document.addEventListener('keydown', function (e) {{
    var t = e.target.tagName;
    if (e.ctrlKey || e.metaKey || e.altKey || t === 'INPUT' || t === 'SELECT' || t === 'TEXTAREA' || e.target.isContentEditable) return;
    var k = e.key;
    if (k === 'a') send('approve');
    else if (k === 'u') send('unsure');
    else if (k === 'e' && esc) esc.click();
    else if (k === '/') note.focus();
    else if (k === 'c') {{ sel.focus(); hint('Arrow keys pick a label, Enter corrects (Esc leaves the list).'); }}
    else if (k === 'l') document.getElementById('release').submit();
    else if (k >= '1' && k <= '9' && labels[+k - 1] !== undefined) {{
      var lb = labels[+k - 1];
      if (lb === predicted) {{ hint(lb + ' is the predicted label: press a to approve it.'); }}
      else {{ sel.value = lb; send('correct'); }}
    }} else return;
    e.preventDefault();
  }});
}})();
</script>"""
    return layout(f"Task {task['event_id']}", body, reviewer)


def _js_str(s: str) -> str:
    import json

    return json.dumps(s).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _js_list(items: list[str]) -> str:
    return "[" + ",".join(_js_str(s) for s in items) + "]"


def _similar(rows: list[dict] | None) -> str:
    if not rows:
        return ""
    cells = "".join(f"<tr><td>{escape(r['event_id'])}</td><td>{fmt.percent(r['confidence'])}</td>"
                    f"<td>{escape(r['action'])}</td><td>{escape(r['corrected_label'] or '')}</td></tr>" for r in rows)
    return ("<h3>Recent answers to similar cases</h3><p class=muted>same model, predicted label and rule</p>"
            f"<table id=similar><tr><th>event</th><th>confidence</th><th>answer</th><th>label</th></tr>{cells}</table>")
