"""Build script: maps the top-level code folders onto the ``n3xus`` namespace and
compiles the Cython hot paths.

``n3xus`` itself is an implicit namespace package (PEP 420): the repository top
level holds ``node/ canon/ ledger/ ...`` as the design names them, and each one
installs as ``n3xus.<folder>``. Nothing installs a generic top-level ``node`` or
``canon`` module into site-packages.

Every ``*.pyx`` below a code folder is an optional extension with a pure-Python
twin of the same names next to it. If compiling fails (no compiler, no headers)
the install still succeeds, prints a warning, and the twins are used; set
``N3XUS_REQUIRE_COMPILED=1`` at install time to make that an error instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CODE_FOLDERS = ("node", "protocol", "ledger", "canon", "imvu", "webrtc")
# Non-Python files a package serves at run time (read through importlib.resources):
# the operator console's page and assets; the live-room pages.
STATIC_FILES = {"n3xus.node.console": ["*.html", "*.js", "*.css", "*.svg"],
                "n3xus.webrtc.pages": ["*.html", "*.js", "*.css"]}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for folder in CODE_FOLDERS:
        root = HERE / folder
        for init in sorted(root.rglob("__init__.py")):
            rel = init.parent.relative_to(HERE)
            name = "n3xus." + ".".join(rel.parts)
            packages.append(name)
            package_dir[name] = rel.as_posix()
    return packages, package_dir


def _extensions() -> list:
    pyx_files = sorted(p for folder in CODE_FOLDERS for p in (HERE / folder).rglob("*.pyx"))
    if not pyx_files:
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("warning: Cython is not available; using the pure-Python twins", file=sys.stderr)
        return []
    exts = []
    for pyx in pyx_files:
        rel = pyx.relative_to(HERE).with_suffix("")
        exts.append(
            Extension(
                "n3xus." + ".".join(rel.parts),
                [pyx.relative_to(HERE).as_posix()],
                extra_compile_args=["-O3"],
            )
        )
    return cythonize(exts, language_level=3, quiet=True)


class OptionalBuildExt(build_ext):
    """Compile the extensions, but let the install continue without them."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "use the twins"
            self._give_up(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - see run()
            self._give_up(exc)

    @staticmethod
    def _give_up(exc: BaseException) -> None:
        if os.environ.get("N3XUS_REQUIRE_COMPILED") == "1":
            raise exc
        print(
            f"warning: compiling the Cython hot paths failed ({exc}); "
            "n3xus will use its pure-Python twins",
            file=sys.stderr,
        )


packages, package_dir = _packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={name: ["*.pyx", "*.pxd", "*.pxi", "*.h", "py.typed", *STATIC_FILES.get(name, [])]
                  for name in packages},
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
