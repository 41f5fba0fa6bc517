"""Check digits and shape tests used to confirm pattern matches (pure functions)."""

from __future__ import annotations

import re

_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9))),
    **dict(zip("JKLMN", range(1, 6))),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10))),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def npi_ok(npi: str) -> bool:
    """NPI: 10 digits whose Luhn check runs over the prefix 80840 + the number."""
    return len(npi) == 10 and npi.isdigit() and luhn_ok("80840" + npi)


def dea_ok(dea: str) -> bool:
    """DEA registration: 2 letters + 7 digits, last digit = (d1+d3+d5 + 2*(d2+d4+d6)) mod 10."""
    dea = dea.upper()
    if not re.fullmatch(r"[A-Z][A-Z9]\d{7}", dea):
        return False
    d = [int(c) for c in dea[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def vin_ok(vin: str) -> bool:
    """North American VIN: 17 characters (no I, O, Q) with the check digit in position 9."""
    vin = vin.upper()
    if len(vin) != 17 or any(c not in _VIN_VALUES for c in vin):
        return False
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS))
    check = "X" if total % 11 == 10 else str(total % 11)
    return vin[8] == check


def has_digits(value: str, minimum: int = 2) -> bool:
    """Identifiers carry digits; words after a context keyword do not."""
    return sum(c.isdigit() for c in value) >= minimum


def id_ok(value: str) -> bool:
    """A value after an identifier keyword: has digits, and is not a year or a measurement."""
    return has_digits(value, 3) and not re.fullmatch(r"(?:19|20)\d\d|\d+\.\d+|v?\d+(?:\.\d+)+", value)


def long_id_ok(value: str) -> bool:
    """For the noisiest keywords ("ID", "#", "ref", "serial"): at least 4 digits."""
    return id_ok(value) and has_digits(value, 4)


def is_code_like(value: str) -> bool:
    """A long token mixing letters and digits (ABC123456, XK-449-2210), not a dose or version."""
    digits = sum(c.isdigit() for c in value)
    return digits >= 6 and not re.fullmatch(r"\d+(?:\.\d+)?", value)
