"""Per-worker cgroup limits on a real kernel: boots a virtual machine (QEMU, Debian's kernel,
this machine's file tree seen read-only) whose kernel runs the unified cgroup hierarchy
with every controller, makes a cgroup there as systemd makes a service's with
``Delegate=yes`` (its controllers enabled, marked ``user.delegate``), and runs
``tests/test_cgroup_limits.py`` in it: real daemons, real MCP clients, the kernel's OOM
killer and pids limit.

A host whose cgroup2 hierarchy lacks the memory controller (a hybrid hierarchy, a container)
cannot run those tests itself; the machine can. It uses KVM where the kernel has a hardware
one, else QEMU's emulation (slower: a few minutes). ``scripts/test`` installs QEMU and the
kernel as root; without them this skips, naming what is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.isolationkit import CGROUP_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
VM_TIMEOUT = 900
"""Seconds the whole run in the machine may take (boot, start-ups and tests, emulated)."""
GUEST_CGROUP = "/sys/fs/cgroup/mcphost.service"


def kernel() -> str | None:
    """The newest Debian kernel image installed, if any."""
    images = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    return images[-1] if images else None


def hardware_kvm() -> bool:
    """Whether KVM runs guests on the CPU's virtualization (a paravirtual KVM, as in some
    cloud sandboxes, boots only kernels built for it)."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and any(
        os.path.isdir(f"/sys/module/{module}") for module in ("kvm_intel", "kvm_amd")
    )


def static_busybox() -> bool:
    """Whether the ``busybox`` on PATH is statically linked (a dynamic one names its loader near its start)."""
    path = shutil.which("busybox")
    if path is None:
        return False
    with open(path, "rb") as binary:
        return b"ld-linux" not in binary.read(4096)


def missing() -> list[str]:
    vng = Path(sys.executable).with_name("vng")
    needs = {
        "qemu-system-x86_64 (Debian package qemu-system-x86)": shutil.which("qemu-system-x86_64"),
        "a kernel in /boot (Debian package linux-image-amd64)": kernel(),
        # vng builds the machine's initramfs from a static busybox when the kernel needs one (Debian's does).
        "a static busybox (Debian package busybox-static)": static_busybox(),
        "vng (PyPI package virtme-ng, in the test extra)": vng.exists(),
    }
    return [name for name, found in needs.items() if not found]


@pytest.mark.skipif(sys.platform != "linux", reason="virtual machines of Linux only")
def test_cgroup_limits_in_a_virtual_machine(tmp_path: Path) -> None:
    if lacking := missing():
        pytest.skip(f"needs {', '.join(lacking)}: scripts/test installs them as root")
    image = kernel()
    assert image is not None
    if not os.access(image, os.R_OK):
        pytest.skip(f"{image} is readable by root only")
    out = tmp_path / "out"
    out.mkdir()
    python = sys.executable
    # The test run is the service: its shell moves into the delegated cgroup before pytest
    # starts, so the daemons it starts are there, as systemd would start the unit's.
    script = f"""
        set -e
        mkdir -p {GUEST_CGROUP}
        echo '+memory +pids +cpu' > /sys/fs/cgroup/cgroup.subtree_control
        {python} -c 'import os; os.setxattr("{GUEST_CGROUP}", "user.delegate", b"1")'
        echo $$ > {GUEST_CGROUP}/cgroup.procs
        export {CGROUP_VARIABLE}={GUEST_CGROUP} HOME=/tmp
        cd {ROOT}
        set +e
        {python} -m pytest tests/test_cgroup_limits.py -p no:cacheprovider -q -rA --durations=0 \\
            --basetemp=/tmp/pytest > {out}/pytest.log 2>&1
        echo $? > {out}/status
    """
    (out / "run.sh").write_text(script)
    command = [
        str(Path(python).with_name("vng")),
        "--run",
        image,
        "--cpus",
        "2",
        "--memory",
        "2G",
        "--rwdir",
        str(out),
    ]
    if not hardware_kvm():
        command.append("--disable-kvm")
    command += ["--", f"sh {out}/run.sh"]
    env = {**os.environ, "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=VM_TIMEOUT, env=env, cwd=tmp_path)
    log = (out / "pytest.log").read_text() if (out / "pytest.log").exists() else ""
    status = (out / "status").read_text().strip() if (out / "status").exists() else None
    assert status is not None, (
        f"the machine did not run the tests (vng status {done.returncode}):\n{done.stderr[-4000:]}"
    )
    assert status == "0", f"the tests failed in the machine:\n{log[-8000:]}"
    # Every test ran there: none skipped for want of a delegated cgroup.
    assert " passed" in log and "skipped" not in log, log[-4000:]
