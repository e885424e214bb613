"""Synthetic credit-card transactions shaped like the public Kaggle set, and their preprocessing.

The public set (284,807 European card transactions, 0.17% fraud) has `Time` (seconds since the first
transaction), `V1`..`V28` (PCA components of confidential features), `Amount` and `Class` (1 = fraud).
`generate` makes one like it from a seed, without any download: normal transactions are independent
Gaussians with decreasing variance (as PCA components are); most frauds are shifted along the
components that carry fraud in the public set (V14, V12, V10, V17, V4, V11, ...), some only spread
wider there (a pattern trees find and linear models do not), and a few look entirely normal; a few normal ones look like fraud. A few rows are
exact duplicates, as in the public set.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

COLUMNS = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
LABELS = ["Normal", "Fraud"]
DROPPED_COLUMNS = ["Time"]  # seconds since the first transaction of the capture: no meaning for a new one
SPLIT = {"train": 0.70, "validation": 0.15, "test": 0.15}

# component (1-based) -> shift of pattern frauds, in standard deviations of that component
FRAUD_SHIFTS = {14: -3.0, 12: -2.6, 10: -2.3, 17: -2.2, 4: 2.0, 11: 1.8, 3: -1.6, 16: -1.4, 7: -1.2, 2: 1.0}
# frauds that are shifted along those components, that only spread wider along them, or look normal
FRAUD_KINDS = (0.8, 0.15, 0.05)
UNUSUAL_NORMAL_RATE = 0.0003  # normal transactions that look like pattern frauds: the false alarms


@dataclass
class Table:
    columns: list[str]
    values: np.ndarray  # one row per transaction

    @property
    def rows(self) -> int:
        return len(self.values)

    @property
    def frauds(self) -> int:
        return int(self.values[:, self.columns.index("Class")].sum())

    def to_csv(self) -> bytes:
        formats = ["%.0f", *["%.6f"] * 28, "%.2f", "%.0f"]
        buffer = io.StringIO()
        np.savetxt(buffer, self.values, fmt=formats, delimiter=",", header=",".join(self.columns), comments="")
        return buffer.getvalue().encode()


@dataclass
class Prepared:
    """The preprocessed dataset: features scaled with a StandardScaler fitted on the training split."""

    features: list[str]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (X, y)
    scaler: StandardScaler
    duplicates_removed: int
    dropped_columns: list[str] = field(default_factory=lambda: list(DROPPED_COLUMNS))

    def sizes(self) -> dict[str, int]:
        return {name: len(y) for name, (_, y) in self.splits.items()}

    def frauds(self) -> dict[str, int]:
        return {name: int(y.sum()) for name, (_, y) in self.splits.items()}

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {f"{part}_{name}": a for name, xy in self.splits.items() for part, a in zip("Xy", xy, strict=True)}
        np.savez(buffer, features=np.array(self.features), **arrays)
        return buffer.getvalue()


def generate(rows: int = 200_000, fraud_rate: float = 0.0017, duplicate_rate: float = 0.004, seed: int = 7) -> Table:
    """`rows` distinct transactions (exactly round(rows * fraud_rate) frauds), then a few duplicated rows."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(1.9, 0.3, 28)
    components = rng.standard_normal((rows, 28)) * scales
    fraud = np.zeros(rows, dtype=bool)
    fraud[rng.choice(rows, size=round(rows * fraud_rate), replace=False)] = True
    index = np.flatnonzero(fraud)
    kind = rng.choice(["pattern", "subtle", "camouflaged"], size=len(index), p=FRAUD_KINDS)
    carriers = np.array([c - 1 for c in FRAUD_SHIFTS])
    shifts = np.array(list(FRAUD_SHIFTS.values())) * scales[carriers]
    pattern, subtle = index[kind == "pattern"], index[kind == "subtle"]
    strength = rng.uniform(0.8, 1.8, (len(pattern), 1))
    components[np.ix_(pattern, carriers)] = components[np.ix_(pattern, carriers)] * 1.3 + shifts * strength
    components[np.ix_(subtle, carriers)] *= 3.0
    unusual = rng.choice(np.flatnonzero(~fraud), size=round(rows * UNUSUAL_NORMAL_RATE), replace=False)
    components[np.ix_(unusual, carriers)] += shifts * rng.uniform(0.4, 1.0, (len(unusual), 1))

    time = np.sort(rng.integers(0, 172_800, rows)).astype(float)
    amount = np.exp(rng.normal(3.3, 1.2, rows))
    amount[fraud] = np.where(rng.random(len(index)) < 0.4, rng.uniform(0.5, 2.0, len(index)), np.exp(rng.normal(4.5, 1.4, len(index))))
    values = np.column_stack([time, components, np.round(amount, 2), fraud.astype(float)])
    values = np.round(values, 6)  # what the CSV holds, so that duplicates stay exact duplicates

    copies = rng.choice(rows, size=round(rows * duplicate_rate), replace=False)
    order = np.argsort(np.concatenate([np.arange(rows), copies]), kind="stable")
    return Table(list(COLUMNS), np.concatenate([values, values[copies]])[order])


def preprocess(raw: Table, seed: int = 7) -> Prepared:
    """Duplicates removed, unneeded columns dropped, a stratified train/validation/test split, StandardScaler."""
    _, first = np.unique(raw.values, axis=0, return_index=True)
    values = raw.values[np.sort(first)]
    keep = [i for i, name in enumerate(raw.columns) if name not in DROPPED_COLUMNS and name != "Class"]
    X, y = values[:, keep].astype(np.float32), values[:, raw.columns.index("Class")].astype(int)

    held_out = SPLIT["validation"] + SPLIT["test"]
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=held_out, stratify=y, random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, test_size=SPLIT["test"] / held_out, stratify=y_rest, random_state=seed
    )
    scaler = StandardScaler().fit(X_train)
    scaled = {
        name: (scaler.transform(features).astype(np.float32), labels)
        for name, features, labels in (
            ("train", X_train, y_train),
            ("validation", X_val, y_val),
            ("test", X_test, y_test),
        )
    }
    return Prepared(
        features=[raw.columns[i] for i in keep],
        splits=scaled,
        scaler=scaler,
        duplicates_removed=raw.rows - len(values),
    )


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
