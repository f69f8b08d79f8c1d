"""`vmddpm-deploy doctor`: what this installation can run."""

from __future__ import annotations

from vmddpm_deploy import __version__
from vmddpm_deploy.cli.app import app, print_note, reports_errors, wide_console


@app.command()
@reports_errors
def doctor() -> None:
    """Report what this installation can run: native kernels, GPU, runtimes, and CPU threads.

    The threads row gives torch's thread count, the machine's load and a small convolution timed
    at that many threads and at one; when one thread is faster (an oversubscribed machine), a
    note says to lower OMP_NUM_THREADS.

    Example: vmddpm-deploy doctor
    """
    import importlib.util

    import torch
    from rich.table import Table

    from vmddpm_deploy.benchmark import thread_report
    from vmddpm_deploy.ops import dispatch, native_library

    report = native_library.describe()
    table = Table(title=f"vmddpm-deploy {__version__}", show_header=False)
    table.add_row("torch", f"{torch.__version__} (cuda device: {'yes' if torch.cuda.is_available() else 'no'})")
    table.add_row("VMDDPM_OPS", dispatch.requested())
    if report["loaded"]:
        table.add_row("native library", report["library"])
        table.add_row("native cpu", f"{report['cpu_isa']} (built: {', '.join(report['cpu_isas_built'])}), "
                      f"openmp {'on' if report['openmp'] else 'off'}")
        cuda = f"built for sm_{', sm_'.join(report['cuda_archs'])}" if report["cuda_built"] else "not built"
        table.add_row("native cuda", cuda)
    else:
        table.add_row("native library", f"not loaded: {report['error']} (ops run the reference)")
    for module in ("onnxruntime", "tensorrt"):
        table.add_row(module, "installed" if importlib.util.find_spec(module) else "not installed")
    threads = thread_report()
    table.add_row("cpu threads", threads.summary())
    wide_console().print(table)
    if threads.advice():
        print_note(threads.advice())


