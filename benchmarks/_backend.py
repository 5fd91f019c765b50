"""What a benchmark prints about the backend, shared by the scripts."""

import jax


def matmul_precision_note() -> str:
    """One line on the float32 matrix precision in force, a warning where it is not float32.

    Returns:
        The note; on an NVIDIA GPU under JAX's default precision it says that float32 products
        run in TF32 (10 mantissa bits per input), so agreement figures there are TF32's.
    """
    setting = jax.config.jax_default_matmul_precision
    if jax.default_backend() == "gpu" and setting in (None, "default", "bfloat16", "tensorfloat32"):
        return (
            f"WARNING: matmul precision {setting or 'default'}: float32 products run in TF32 "
            "on NVIDIA GPUs since Ampere, so differences below are TF32's, not float32's "
            "(JAX_DEFAULT_MATMUL_PRECISION=highest for full float32)"
        )
    return f"matmul precision: {setting or 'default'}"
