"""The layer builds its C kernels on first use and caches them; build them ahead of time, for example in an image whose
later stages have no compiler."""

from __future__ import annotations

from onlinenorm.cli import add_command, command_group


@command_group("kernels", help="the layer's C kernels: build them ahead of use")
def register(actions) -> None:
    build = add_command(actions, "build", run_build)
    build.add_argument(
        "--portable",
        action="store_true",
        help="build for any CPU of this architecture (x86-64-v3: AVX2 and FMA; aarch64: ARMv8-A), not just this one: "
        "machines without a compiler that share the folder use it (the Docker image does)",
    )


def run_build(args) -> int:
    """Build the C kernels into ONLINENORM_CACHE_DIR (else ~/.cache/onlinenorm); print the path.

    Compile the C kernels for this machine (or, with --portable, for any CPU of its architecture) into
    ONLINENORM_CACHE_DIR, else ~/.cache/onlinenorm, and print the library's path.
    """
    from onlinenorm.cli import UsageError
    from onlinenorm.kernels import native

    try:
        print(native.build_portable() if args.portable else native.build_native())
    except native.NativeUnavailable as err:
        raise UsageError(str(err)) from None
    return 0
