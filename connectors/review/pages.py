"""Server-rendered HTML shared by the review pages: layout, login, errors, queue cards (no JS framework)."""
from __future__ import annotations

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


# The queue and task pages live in loopline.connectors.review.queue_view (the workbench).
