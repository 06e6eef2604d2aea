"""skinseg doctor: what matters for the install at hand."""

import shutil

from skinseg.cli import app
from tests.cli_helpers import runner


def test_doctor_speaks_of_the_install_at_hand():
    res = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "AzureExecutionProvider" not in res.output and "keras: None" not in res.output
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        assert "training side" in res.output and "[cpu,train]" in res.output
    if shutil.which("nvidia-smi") is None:
        assert "CUDA libraries are installed" not in res.output
