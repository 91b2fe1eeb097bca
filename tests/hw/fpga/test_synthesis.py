"""hw/fpga/synthesis.py: a yosys failure names yosys' own error; the one failure retried."""
import pytest

from hw.fpga import flow, synthesis, targets
from hw.errors import BinbertError


def test_tool_failure_names_its_error_line(tmp_path):
    """A yosys failure is reported with yosys' own ERROR line (it logs with -q -l yosys.log)."""
    with pytest.raises(BinbertError, match=r"^yosys failed: ERROR: .*\(log: .*yosys.log\)$"):
        flow.build(flow.make_layer("pe", simd=4), targets.TARGETS["ecp5-85k"], tmp_path,
                   synth_opts=("-no-such-flag",))


ABC9_LOG = """5.46.20.6. Executing ABC9_OPS pass (helper functions for ABC9).
5.46.20.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).
<suppressed ~79484 debug messages>
ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc:3091.
"""


@pytest.mark.parametrize("log,hit", [
    (ABC9_LOG, True),
    (ABC9_LOG.replace("ABC_OPS_REINTEGRATE", "OPT_CLEAN"), False),  # another pass's assert
    (ABC9_LOG.replace("ERROR: Assert", "ERROR: Found"), False),     # not an assertion
    ("ERROR: Command syntax error: Unknown option\n", False),
])
def test_abc9_assert_detected(log, hit):
    """The one yosys failure the flow retries with splitnets (Yosys 0.70's abc9 bug)."""
    assert synthesis.abc9_reintegrate_assert(log) is hit
