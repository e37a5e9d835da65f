"""Commands that need no model start fast (issue 28, item 2): the modules behind `atelier audit`, `sources`,
`publish`, `takedown` and `services` import no torch, diffusers, open_clip or transformers (about 8 s together on a
busy 2-core machine); those load only where a model is used."""

import subprocess
import sys

HEAVY = ("torch", "diffusers", "open_clip", "transformers")
LIGHT = ("app.cli", "app.audit", "app.audit_report", "app.bundle", "app.takedown", "app.services", "atelier.declared")


def test_the_commands_that_need_no_model_import_no_model_library():
    code = (
        f"import sys\nfor m in {LIGHT!r}:\n    __import__(m)\n"
        f"print(','.join(sorted(k for k in {HEAVY!r} if k in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at start: {proc.stdout.strip()}"
