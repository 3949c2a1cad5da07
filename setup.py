"""Build script. The repository root is the package `loopwright`, and every folder below it that holds an
`__init__.py` is one of its subpackages: they are found here, so a new one can never be left out of the wheel.
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """Leaves this script out of the package it sits in (the root folder is `loopwright` itself)."""

    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("loopwright", "setup")]


if __name__ == "__main__":  # as the build runs it; importing `loopwright.setup` from a checkout does nothing
    setup(packages=["loopwright", *(f"loopwright.{name}" for name in find_packages(".", exclude=["tests", "tests.*"]))],
          cmdclass={"build_py": BuildPy})
