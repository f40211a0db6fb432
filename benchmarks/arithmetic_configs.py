"""The reasoning-gym `basic_arithmetic` configurations the search benchmarks use.

All keep reasoning-gym's default operators (+, -, *, /); they differ in terms and digits. The
head is trained on tasks drawn with other seeds than the ones the benchmark evaluates on.
"""

from typing import Any

SUITES: dict[str, dict[str, Any]] = {
    "2terms-1digit": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "3terms-1digit": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
    "2terms-2digit": {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2},
}
