"""The package's shape: imports go one way (masks <- made <- bijectors <- flows <- training)
and no module reaches into another's private names."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxmaf"

# Each module may import only modules of a lower layer.
LAYERS = [
    {"version"},
    {
        "validation",
        "optimizers",
        "activations",
        "averaging",
        "chunking",
        "eager",
        "functional",
        "draws",
    },
    {"programs"},
    {"history", "progress"},
    {"masks", "masked_linear", "splines", "batch_norm", "fileformat", "epochs", "logdet", "splits"},
    {"transformers", "toy_data", "legacy", "mask_records"},
    {"made", "bases", "config", "bijectors", "preprocessing", "datasets"},
    {"sampling", "density", "layers"},
    {"flow"},
    {"flows"},
    {"serialization", "for_numpyro"},
    {"checkpoint", "train_state", "ensemble", "elbo"},
    {"variational"},
    {"training", "diagnostics", "calibration"},
    {"plotting"},
]


def _imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``[(module, [names])]`` of every ``jaxmaf`` import in a file (any depth, lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmaf"):
            if node.module == "jaxmaf":
                found += [(alias.name, []) for alias in node.names]
            else:
                found.append((node.module.split(".")[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (a.name.split(".")[1], []) for a in node.names if a.name.startswith("jaxmaf.")
            ]
    return found


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    raise AssertionError(f"jaxmaf/{module}.py is in no layer of LAYERS: place it")


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_go_one_way_and_skip_no_private_name(path):
    module = path.stem
    if module == "__init__":
        return
    for target, names in _imports(path):
        if target in ("__version__",):
            continue
        assert _layer(target) < _layer(module), f"{module} imports {target}, which is not below it"
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{module} imports private names {private} from {target}"


def test_every_module_is_placed_and_none_is_oversized():
    for path in PACKAGE.glob("*.py"):
        if path.stem != "__init__":
            _layer(path.stem)
        lines = len(path.read_text().splitlines())
        assert lines <= 410, f"{path.name} has {lines} lines; split it by concept"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):  # docstrings included
                size = node.end_lineno - node.lineno + 1
                assert size <= 215, f"{path.name}: class {node.name} has {size} lines"


# Names users may import from the modules they lived in before the split into concepts.
FORMER_HOMES = {
    "flows": ["MAF", "IAF", "FlowConfig", "standard_normal_log_prob", "PERMUTATIONS", "BASES"],
    "made": ["MADE", "MaskedLinear", "ACTIVATIONS", "get_activation", "uniform_fan_in"],
    "made ": ["Constant", "default_dtype"],
    "training": ["fit", "fit_ensemble", "History", "check_data", "with_parameter_average"],
    "training ": ["AveragedState", "DEFAULT_EMA_EPOCHS", "TRAIN_STATE", "BEST_FLOW"],
    "serialization": ["save", "load", "encode", "decode", "read", "atomic_write", "MAGIC"],
    "serialization ": ["flat_params", "set_flat_params", "to_named_arrays", "from_named_arrays"],
    "bijectors": ["MaskedAutoregressive", "Permute", "BatchNorm"],
    "transformers": ["Affine", "Spline", "Transformer", "get_transformer", "inverse_softplus"],
    "checkpoint": ["save", "load", "atomic_write", "flat_params", "set_flat_params"],
}


@pytest.mark.parametrize("module", sorted(FORMER_HOMES))
def test_names_still_importable_from_their_former_modules(module):
    import importlib

    mod = importlib.import_module(f"jaxmaf.{module.strip()}")
    missing = [n for n in FORMER_HOMES[module] if not hasattr(mod, n)]
    assert not missing, f"jaxmaf.{module.strip()} no longer has {missing}"
