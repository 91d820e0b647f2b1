"""The fast path of the model_devi.out reader: a block of fixed-width lines (the DeePMD pair
style's ``%12d`` then ``%18.6e`` columns) parsed on its bytes with numpy. A number of at most 15
digits with a decimal exponent within ±22 is one exactly rounded multiplication or division of
exact doubles, i.e. the double ``strtod`` gives; any other row returns None to the caller, which
parses it with ``np.loadtxt``."""

from __future__ import annotations

import numpy as np

Columns = tuple[int, int, int]  # positions of step, max_devi_v, max_devi_f
_SPACE, _DIGIT, _DOT, _EXP, _SIGN = 0, 1, 2, 3, 4  # byte classes of a fixed-width number


def _constant(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


_POW10 = _constant(np.array([float(10**k) for k in range(23)]))  # the powers of ten that are exact doubles
_TIMES = _constant(np.concatenate([np.ones(22), _POW10]))  # [e10 + 22]: 10^e10 for e10 ≥ 0, else 1
_OVER = _constant(np.concatenate([_POW10[:0:-1], np.ones(23)]))  # [e10 + 22]: 10^-e10 for e10 < 0, else 1
_MAX_DIGITS = 15  # an integer of 15 digits is an exact double


def loadtxt_rows(text: str) -> np.ndarray:
    """The rows of ``text`` as the reader always parsed them, shape (rows, columns)."""
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return np.loadtxt(rows, ndmin=2) if rows else np.zeros((0, 0))


class Scratch:
    """Arrays reused from block to block (the same reason as for the read buffer)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, name: str, size: int, dtype: type) -> np.ndarray:
        key = (name, np.dtype(dtype).str)
        if key not in self._arrays or self._arrays[key].size < size:
            self._arrays[key] = np.empty(size, dtype=dtype)
        return self._arrays[key][:size]


def fixed_width(buf: bytearray, stop: int, cols: Columns,
                 scratch: Scratch) -> tuple[list[np.ndarray], int] | None:
    """The three columns of ``buf[:stop]`` when its lines have a fixed width (else None)."""
    length = buf.find(b"\n", 0, stop) + 1
    if length < 2 or stop % length or buf.find(b"#", 0, stop) >= 0:
        return None
    rows = np.frombuffer(buf, dtype=np.uint8, count=stop).reshape(-1, length)
    # printable ASCII but the newline ending each line: no tab, no other line break
    if not (rows[:, -1] == 10).all() or rows[:, :-1].min() < 32 or rows.max() > 126:
        return None
    ends = _token_ends(rows, scratch)
    if ends is None or len(ends) <= max(cols):
        return None
    spans = [(ends[c - 1] if c else 0, ends[c]) for c in cols]
    fields = _transposed(rows, spans)
    out, bad = [], np.zeros(rows.shape[0], dtype=bool)
    for span in spans:
        parsed = _fixed_field(fields[span])
        if parsed is None:
            return None
        out.append(parsed[0])
        bad |= parsed[1]
    at = np.flatnonzero(bad)
    if at.size:  # NaN, a far exponent, …: those rows as np.loadtxt reads them
        if at.size > rows.shape[0] // 8:
            return None
        parsed_rows = loadtxt_rows(rows[at].tobytes().decode())
        if parsed_rows.shape != (at.size, len(ends)):
            return None
        for k, c in enumerate(cols):
            out[k][at] = parsed_rows[:, c]
    return out, len(ends)


def _transposed(rows: np.ndarray, spans: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """The bytes ``a:b`` of every row as a (bytes × rows) array, for each span: adjacent spans
    copied together (row-wise first, then transposed: faster than gathering columns)."""
    merged: list[list[int]] = []
    for a, b in sorted(set(spans)):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out = {}
    for start, stop in merged:
        copy = np.ascontiguousarray(np.ascontiguousarray(rows[:, start:stop]).T)
        out.update({(a, b): copy[a - start:b - start] for a, b in spans if start <= a and b <= stop})
    return out


def _token_ends(rows: np.ndarray, scratch: Scratch) -> list[int] | None:
    """Where the tokens of the first line end; None unless every line's tokens end there and
    nowhere else (the same number of columns on every line)."""
    size = rows.size
    space = np.equal(rows.reshape(-1), 32, out=scratch("space", size, bool))  # a newline is not
    starts = scratch("starts", size, bool)  # where a run of spaces starts: a token's end
    starts[0] = space[0]
    np.greater(space[1:], space[:-1], out=starts[1:])
    starts = starts.reshape(rows.shape)
    first = np.flatnonzero(starts[0])
    # every line has the first one's and no other (as many in all)
    if np.count_nonzero(starts) != first.size * rows.shape[0] or not starts[:, first].all():
        return None
    ends = [int(e) for e in first if e]
    ends += [] if rows[0, -2] == 32 else [rows.shape[1] - 1]  # the last token, up to the newline
    return ends or None


def _fixed_field(field: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Values of one column of right-aligned numbers (bytes × rows) and the rows this cannot
    read exactly; None when the first row's number has a layout not handled here."""
    token = field[:, 0].tobytes().lstrip(b" ")
    tmpl = _template(token)
    if tmpl is None:
        return None
    if (tmpl == _DIGIT).all():
        return _integer_field(field)
    classes = np.concatenate([np.full(field.shape[0] - len(token), _SPACE), tmpl])
    letter = next((b for b in token if b in (69, 101)), 101)
    return _decimal_field(field, classes, letter)


def _template(token: bytes) -> np.ndarray | None:
    """Byte classes of a number like ``1.234567e-02``, ``0.5`` or ``120`` (None: another kind)."""
    classes: list[int] = []
    for b in token:
        if 48 <= b <= 57:
            classes.append(_DIGIT)
        elif b == 46 and _DOT not in classes and _EXP not in classes:
            classes.append(_DOT)
        elif b in (69, 101) and _DIGIT in classes and _EXP not in classes:
            classes.append(_EXP)
        elif b in (43, 45) and classes and classes[-1] == _EXP:
            classes.append(_SIGN)
        else:
            return None
    if _DIGIT not in classes or (_EXP in classes and classes[-1] != _DIGIT):
        return None
    return np.array(classes)


def _integer_field(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned integers: spaces, then digits (only the last 15 places may hold digits)."""
    keep = max(0, field.shape[0] - _MAX_DIGITS)
    digits = field[keep:] - np.uint8(48)  # a space wraps to 240, any other non-digit to > 9 too
    np.putmask(digits, digits == 240, np.uint8(0))
    bad = (digits > 9).any(axis=0) | (field[:keep] != 32).any(axis=0)
    return _number(digits), bad


def _number(digits: np.ndarray) -> np.ndarray:
    """Σ digits[j]·10^(k-1-j) of k ≤ 15 rows of digits, exactly: float32 sums of up to 7 digits
    (below 2^24, exact), joined in float64 (below 10^15 < 2^53, exact)."""
    value = np.zeros(digits.shape[1])
    for start in range(0, digits.shape[0], 7):
        part = digits[start:start + 7]
        weights = _POW10[part.shape[0] - 1::-1].astype(np.float32)
        value = value * _POW10[part.shape[0]] + weights @ part.astype(np.float32)
    return value


def _decimal_field(field: np.ndarray, classes: np.ndarray,
                   letter: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Numbers laid out as ``classes`` (per byte; bytes × rows), e.g. spaces, ``d.dddddde±dd``;
    ``letter``: the exponent's, ``e`` or ``E`` (a row with the other one is read by np.loadtxt)."""
    exp_at = int(np.flatnonzero(classes == _EXP)[0]) if (classes == _EXP).any() else classes.size
    digit = classes == _DIGIT
    mant_pos = np.flatnonzero(digit[:exp_at])
    exp_pos = np.flatnonzero(digit[exp_at:]) + exp_at
    if mant_pos.size > _MAX_DIGITS or exp_pos.size > 4:
        return None
    # every byte in its range: space, digit, point, the letter, a sign (+ , -: the comma is not one)
    lo = np.array([32, 48, 46, letter, 43], dtype=np.uint8)[classes][:, None]
    span = np.array([0, 9, 0, 0, 2], dtype=np.uint8)[classes][:, None]
    bad = ((field - lo) > span).any(axis=0)
    sign = field[classes == _SIGN]
    dots = np.flatnonzero(classes == _DOT)
    e10 = np.full(field.shape[1], -np.count_nonzero(mant_pos > dots[0]) if dots.size else 0)
    if exp_pos.size:
        exp = _number(field[exp_pos] - np.uint8(48)).astype(np.int64)
        e10 += np.where(sign[0] == 45, -exp, exp) if sign.size else exp
        bad |= (sign == 44).any(axis=0)
    # mant·10^e10 with one rounding: mant·10^e10 / 1 or mant·1 / 10^-e10 (exact powers: |e10| ≤ 22)
    at = e10 + 22
    bad |= (at < 0) | (at > 44)
    np.clip(at, 0, 44, out=at)
    return _number(field[mant_pos] - np.uint8(48)) * _TIMES[at] / _OVER[at], bad


