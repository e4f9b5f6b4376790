"""UCI Adult, read offline from the gzipped copy under ``benchmarks/data/adult`` (CC BY 4.0; see PROVENANCE)."""

from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "adult"
SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}
COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
OCCUPATIONS = (
    "Adm-clerical",
    "Armed-Forces",
    "Craft-repair",
    "Exec-managerial",
    "Farming-fishing",
    "Handlers-cleaners",
    "Machine-op-inspct",
    "Other-service",
    "Priv-house-serv",
    "Prof-specialty",
    "Protective-serv",
    "Sales",
    "Tech-support",
    "Transport-moving",
)
WORKCLASS_GROUPS = {
    "Private": "private",
    "Self-emp-not-inc": "self_emp",
    "Self-emp-inc": "self_emp",
    "Federal-gov": "gov",
    "State-gov": "gov",
    "Local-gov": "gov",
}


class Adult(NamedTuple):
    """Adult after dropping rows with missing values; features are raw (not standardized)."""

    x: np.ndarray  # float64 (n, d)
    y: np.ndarray  # int32 (n,), 1 = income > 50K
    is_test: np.ndarray  # bool (n,), row comes from adult.test (the official test file)
    age: np.ndarray  # float64 (n,)
    sex: np.ndarray  # int32 (n,), 1 = male
    feature_names: tuple[str, ...]


def _read(name: str) -> list[list[str]]:
    raw = gzip.decompress((DATA_DIR / f"{name}.gz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256[name]:
        raise RuntimeError(f"{name}: sha256 {digest} does not match the committed provenance {SHA256[name]}")
    rows = []
    for line in raw.decode("ascii").splitlines():
        if not line.strip() or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(COLUMNS):
            raise RuntimeError(f"{name}: malformed row {line!r}")
        rows.append(fields)
    return rows


@functools.cache
def load_adult() -> Adult:
    """Load Adult (train + test files) with a compact numeric encoding (d = 26).

    Features: age, education_num, hours_per_week, log1p(capital_gain), log1p(capital_loss), male, white,
    born in the US, married (civilian or armed-forces spouse), workclass in {private, self-employed, government}
    (one-hot; other workclasses all zero) and occupation (one-hot over 14). Rows with a missing value ('?') are
    dropped, as is ``fnlwgt`` (a sampling weight, not a person's attribute), and the redundant ``education``
    and ``relationship`` columns.
    """
    rows, is_test = [], []
    for name, flag in (("adult.data", False), ("adult.test", True)):
        part = [r for r in _read(name) if "?" not in r]
        rows += part
        is_test += [flag] * len(part)
    col = {c: np.array([r[i] for r in rows]) for i, c in enumerate(COLUMNS)}
    age = col["age"].astype(np.float64)
    feats = {
        "age": age,
        "education_num": col["education_num"].astype(np.float64),
        "hours_per_week": col["hours_per_week"].astype(np.float64),
        "log_capital_gain": np.log1p(col["capital_gain"].astype(np.float64)),
        "log_capital_loss": np.log1p(col["capital_loss"].astype(np.float64)),
        "male": (col["sex"] == "Male").astype(np.float64),
        "white": (col["race"] == "White").astype(np.float64),
        "us_born": (col["native_country"] == "United-States").astype(np.float64),
        "married": np.isin(col["marital_status"], ["Married-civ-spouse", "Married-AF-spouse"]).astype(np.float64),
    }
    wc = np.array([WORKCLASS_GROUPS.get(w, "other") for w in col["workclass"]])
    for g in ("private", "self_emp", "gov"):
        feats[f"workclass_{g}"] = (wc == g).astype(np.float64)
    for occ in OCCUPATIONS:
        feats[f"occupation_{occ}"] = (col["occupation"] == occ).astype(np.float64)
    names = tuple(feats)
    x = np.stack([feats[k] for k in names], axis=1)
    y = np.char.startswith(col["income"], ">50K").astype(np.int32)
    return Adult(
        x=x,
        y=y,
        is_test=np.array(is_test),
        age=age,
        sex=feats["male"].astype(np.int32),
        feature_names=names,
    )
