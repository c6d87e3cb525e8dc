"""Personal data marked in the policy file is masked for reviewers without clearance (and follows edits)."""
from __future__ import annotations

import os

from loopline.connectors.review.service import MASK, ReviewService
from loopline.connectors.review.settings import ReviewSettings

POLICY = """
version = "pii-1"
[models.fraud]
personal_data = ["merchant_id", "ip_country"]
"""


def _task(model: str = "fraud") -> dict:
    return {"task_id": "e1:review", "tier": "review", "model_name": model,
            "prediction": {"features_numeric": {"amount": 12.5, "account_age_days": 40.0},
                           "features_categorical": {"merchant_id": "m-77", "country": "DE"},
                           "context": {"ip_country": "FR"}, "risk": None}}


def _service(tmp_path, policy_file=None) -> ReviewService:
    settings = ReviewSettings(masked_features=("country",), policy_file=policy_file)
    return ReviewService(settings, store=None, publisher=None, metrics=None)


def test_policy_marks_and_settings_are_both_masked(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    svc = _service(tmp_path, path)
    analyst = {"name": "ana", "role": "analyst", "pii_clearance": False}
    cleared = {"name": "pia", "role": "analyst", "pii_clearance": True}
    pred = svc.view(_task(), analyst)["prediction"]
    assert pred["features_categorical"] == {"merchant_id": MASK, "country": MASK}
    assert pred["context"] == {"ip_country": MASK}
    assert pred["features_numeric"] == {"amount": 12.5, "account_age_days": 40.0}
    assert svc.view(_task(), cleared)["prediction"]["features_categorical"]["merchant_id"] == "m-77"
    # another model has no marks of its own: only the settings' list applies
    other = svc.view(_task("churn"), analyst)["prediction"]
    assert other["features_categorical"] == {"merchant_id": "m-77", "country": MASK}
    # an edited policy file is picked up; an invalid edit keeps the last valid marks
    path.write_text(POLICY.replace('"merchant_id", "ip_country"', '"amount"'))
    os.utime(path, ns=(1, 10**18))
    pred = svc.view(_task(), analyst)["prediction"]
    assert pred["features_numeric"]["amount"] == MASK and pred["features_categorical"]["merchant_id"] == "m-77"
    path.write_text("version = 7\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert svc.view(_task(), analyst)["prediction"]["features_numeric"]["amount"] == MASK


def test_without_policy_file_the_settings_list_applies(tmp_path):
    svc = _service(tmp_path)
    pred = svc.view(_task(), {"name": "ana", "role": "analyst", "pii_clearance": False})["prediction"]
    assert pred["features_categorical"] == {"merchant_id": "m-77", "country": MASK}


def test_terminal_keys_are_single_keystrokes_without_enter():
    """On a real terminal (a pty here) one key press is read without waiting for Enter."""
    import io
    import pty
    import threading
    import time

    from loopline.connectors.review.cli import Keys

    master, slave = pty.openpty()

    def press(data: bytes) -> None:  # typed after the reader switched the terminal to cbreak mode
        threading.Timer(0.3, os.write, (master, data)).start()

    with os.fdopen(slave, "rb", buffering=0) as tty_in:
        keys = Keys(tty_in)
        assert keys.tty
        out = io.StringIO()
        press(b"C")  # no newline
        # a line-based reader would block here; Enter arrives only after 5 s so the test ends either way
        enter = threading.Timer(5.0, os.write, (master, b"\n"))
        enter.start()
        t0 = time.monotonic()
        assert keys.key(out) == "c"
        assert time.monotonic() - t0 < 4.0, "the key was only read after Enter"
        enter.cancel()
        press(b"\x04")  # Ctrl-D quits
        assert keys.key(out) == "q"
    os.close(master)


def _task_with_insights() -> dict:
    t = _task()
    t["insights"] = {"rule": "r", "override_risk": 0.2, "online_prediction": None,
                     "drift_status": "drifting: merchant_id=m-77 (psi 0.3), amount (psi 0.2)",
                     "top_contributions": [{"feature": "merchant_id=m-77", "contribution": 0.4},
                                           {"feature": "amount", "contribution": -0.1},
                                           {"feature": "ip_country", "contribution": 0.3}]}
    return t


def test_insights_never_show_a_masked_feature(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    svc = _service(tmp_path, path)
    analyst = {"name": "ana", "role": "analyst", "pii_clearance": False}
    ins = svc.view(_task_with_insights(), analyst)["insights"]
    assert [c["feature"] for c in ins["top_contributions"]] == ["amount"]
    assert ins["drift_status"] == f"drifting: merchant_id={MASK} (psi 0.3), amount (psi 0.2)"
    assert "m-77" not in repr(svc.view(_task_with_insights(), analyst))
    cleared = svc.view(_task_with_insights(), {"name": "p", "role": "analyst", "pii_clearance": True})
    assert len(cleared["insights"]["top_contributions"]) == 3


def test_policy_events_marks_reach_the_masking_without_a_file(tmp_path):
    from loopline.connectors.review.policy_marks import PolicyMarks

    svc = _service(tmp_path)
    svc.policy_marks = PolicyMarks()
    analyst = {"name": "ana", "role": "analyst", "pii_clearance": False}
    assert svc.view(_task(), analyst)["prediction"]["features_numeric"]["amount"] == 12.5
    assert svc.policy_marks.update({"changed_at": 10, "personal_data": {"fraud": ["amount"]},
                                    "personal_data_default": ["merchant_id"]})
    assert svc.view(_task(), analyst)["prediction"]["features_numeric"]["amount"] == MASK
    assert svc.view(_task("churn"), analyst)["prediction"]["features_categorical"]["merchant_id"] == MASK
    # an older event (another worker's late copy) and a v1 event without marks change nothing
    assert not svc.policy_marks.update({"changed_at": 5, "personal_data": {"fraud": ["ip_country"]},
                                        "personal_data_default": []})
    assert not svc.policy_marks.update({"changed_at": 20, "personal_data": {}, "personal_data_default": []})
    assert svc.view(_task(), analyst)["prediction"]["features_numeric"]["amount"] == MASK
    # a current event that marks nothing any more (personal_data_known) unmasks: marks can shrink
    assert svc.policy_marks.update({"changed_at": 30, "personal_data": {}, "personal_data_default": [],
                                    "personal_data_known": True})
    assert svc.view(_task(), analyst)["prediction"]["features_numeric"]["amount"] == 12.5
