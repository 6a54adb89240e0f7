"""Install `tpu_grapheme` (the training library) and `tune` (Ray Tune searches)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tpu_grapheme",
    version="0.1.0",
    description="TPU-ready custom training loop and tuning stack for Bengali grapheme classification",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["tpu_grapheme", "tpu_grapheme.*", "tune", "tune.*"]),
    package_data={"tune": ["spaces/*.yaml"]},
    install_requires=[
        # CPU build; on a GPU machine install `tensorflow[and-cuda]==2.21.*` instead, on a TPU VM
        # `tensorflow-tpu==2.21.*` (see README, "Accelerators").
        "tensorflow-cpu>=2.21,<2.22",
        "keras>=3.15,<4",
        "ray[tune]>=2.50,<3",
        "optuna>=4,<6",
        "pandas>=2.2,<4",
        "pyarrow>=18,<30",
        "numpy>=1.26,<3",
        "PyYAML>=6,<7",
        "Pillow>=11,<14",  # wheel ships raqm/HarfBuzz: shapes Bengali conjuncts and vowel signs
        "justmytype-intl-south-asia>=0.1,<1",  # Noto Sans Bengali, no root install needed
        # four more Bengali typefaces (Bangla, BenSen Handwriting, Ekushey Kolom, SolaimanLipi) for the
        # rendered unseen combinations (data/typefaces.py); the only other PyPI package with Bengali TTFs
        "bengali-captcha>=0.1.2,<1",
        "matplotlib>=3.8,<4",
        "tqdm>=4.66,<5",
        "tensorboard>=2.18,<3",  # tf.summary needs it; TF 2.21 no longer pulls it in
    ],
    extras_require={
        "test": [
            "pytest>=8,<9.2",  # 9.2 breaks xdist's --dist loadgroup (pytest-xdist#1386)
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "import-linter>=2.1,<3",  # `make test` checks the layer contracts in pyproject.toml
            "scikit-learn>=1.4",
            "efficientnet>=1.1.1,<2",
        ],
        "dashboard": ["optuna-dashboard>=0.21,<1"],  # opens a search's optuna.db (README, "Dashboards")
        # cloud-tpu-client alone downgrades protobuf to 3.20 and breaks TF: pin one TF accepts.
        "tpu": ["cloud-tpu-client>=0.10", "protobuf>=5.28,<8"],
    },
    entry_points={
        "console_scripts": [
            "tpu-grapheme-train=tpu_grapheme.train:main",
            "tpu-grapheme-prepare=tpu_grapheme.data.prepare:main",
            "tpu-grapheme-infer=tpu_grapheme.inference.cli:main",
            "tpu-grapheme-search=tune.search:main",
        ]
    },
)
