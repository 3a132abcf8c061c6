"""TF Serving's XLA switch: `--xla_cpu_compilation_enabled` (off by default).

Upstream (model_servers/main.cc) calls DisableXlaCompilation() unless the CPU or the GPU flag is
given; a function exported with jit_compile then fails when it is run: DeviceCompiler answers
INTERNAL "XLA compilation disabled". The stand-in finds such functions from the SavedModel's
function library (`_XlaMustCompile`) and answers the same for every signature that reaches one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from serving.model_server.errors import Code, ServingError
from serving.model_server.options import parse_options
from serving.model_server.servable import _read_meta_graph, load_version, xla_requirements


class _Module(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def plain(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}

    @tf.function(jit_compile=True)
    def _tripled(self, x: tf.Tensor) -> tf.Tensor:
        return x * 3.0

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def nested(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        # A compiled function inside a loop body, as the export's per-image Grad-CAM tail.
        return {"y": tf.map_fn(lambda value: self._tripled(value[None])[0], x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")], jit_compile=True)
    def whole(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + 1.0}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = _Module()
    path = tmp_path_factory.mktemp("xla") / "1"
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.plain,
            "nested": module.nested,
            "whole": module.whole,
        },
    )
    return path


def test_the_signatures_that_reach_a_compiled_function_are_found(saved: Path) -> None:
    requirements = xla_requirements(_read_meta_graph(saved, ["serve"]))

    assert sorted(requirements) == ["nested", "whole"]
    for message in requirements.values():
        assert message.startswith("XLA compilation disabled\n\t [[")
    assert "{{function_node " in requirements["nested"]  # the loop body that calls it


def test_without_the_flag_compiled_signatures_fail_as_upstream(saved: Path) -> None:
    loaded = load_version("m", 1, saved, warmup=False)
    x = {"x": np.array([1.0, 2.0], np.float32)}

    np.testing.assert_allclose(loaded.run("serving_default", x)["y"], [2.0, 4.0])
    for key in ("nested", "whole"):
        with pytest.raises(ServingError) as caught:
            loaded.run(key, x)
        assert caught.value.code == Code.INTERNAL
        assert "XLA compilation disabled" in str(caught.value)


def test_with_the_flag_compiled_signatures_run(saved: Path) -> None:
    loaded = load_version("m", 1, saved, warmup=False, xla_enabled=True)
    x = {"x": np.array([1.0, 2.0], np.float32)}

    np.testing.assert_allclose(loaded.run("nested", x)["y"], [3.0, 6.0])
    np.testing.assert_allclose(loaded.run("whole", x)["y"], [2.0, 3.0])


@pytest.mark.parametrize(
    ("flags", "enabled"),
    [
        pytest.param([], False, id="off by default"),
        pytest.param(["--xla_cpu_compilation_enabled"], True, id="cpu flag"),
        pytest.param(["--xla_cpu_compilation_enabled=true"], True, id="cpu flag true"),
        pytest.param(["--xla_cpu_compilation_enabled=false"], False, id="cpu flag false"),
        pytest.param(["--xla_gpu_compilation_enabled=true"], True, id="gpu flag enables both"),
    ],
)
def test_xla_flags_parse_as_tf_servings(flags: list[str], enabled: bool) -> None:
    options = parse_options(["--model_base_path=/models/m", *flags])

    assert options.xla_enabled is enabled
