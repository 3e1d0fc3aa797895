"""Algorithm registry. Importing this package registers every algorithm: each module in this
folder (one algorithm per file) is imported, so a new file is all a new algorithm needs."""
import importlib
import pkgutil

from semifer.algorithms.base import (ALGORITHMS, Algorithm, StepOutput, algorithm_options, check_algorithm,
                                     create_algorithm, register_algorithm)

_NOT_ALGORITHMS = {"base", "common"}
for _m in pkgutil.iter_modules(__path__):
    if _m.name not in _NOT_ALGORITHMS and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ALGORITHMS", "Algorithm", "StepOutput", "algorithm_options", "check_algorithm", "create_algorithm",
           "register_algorithm"]


def list_algorithms() -> list[str]:
    return ALGORITHMS.names()
