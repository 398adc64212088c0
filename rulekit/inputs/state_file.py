"""The risk state as a JSON file: how ``rulekit evaluate --state`` takes the account's situation."""
from __future__ import annotations

import json
from pathlib import Path

from rulekit.errors import StateError
from rulekit.model import RiskState


def load_state(path: str) -> RiskState:
    """Read a state file (``RiskState.from_record``'s fields and rules): anything missing or
    malformed is an error, never a silent default."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise StateError(f"cannot read risk state: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise StateError("not UTF-8 text", path) from None
    except json.JSONDecodeError as exc:
        raise StateError(f"not valid JSON: {exc.msg}", path, exc.lineno, exc.colno) from None
    return RiskState.from_record(data, path)
