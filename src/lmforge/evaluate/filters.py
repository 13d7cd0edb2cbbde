"""lm-eval's common response filters: a filter_list entry is {name, filter: [steps]}, each step a function
applied to the model's responses for one document, in order; the metric is then computed per filter and
reported as "METRIC,NAME".

Supported steps (lm-eval's semantics): `regex` (regex_pattern, group_select, fallback), `take_first`,
`lowercase`, `uppercase`, `remove_whitespace` (leading whitespace).
"""

from __future__ import annotations

import re

from lmforge.errors import DataError

STEPS = ("regex", "take_first", "lowercase", "uppercase", "remove_whitespace")
DEFAULT_REGEX = r"#### (\-?[0-9\.\,]+)"


def check_filter(flt, where: str) -> None:
    if not isinstance(flt, dict) or not isinstance(flt.get("name"), str) or not isinstance(flt.get("filter"), list):
        raise DataError(f"a filter_list entry needs `name` and a `filter` list, got {flt!r}", where=where)
    for step in flt["filter"]:
        function = step.get("function") if isinstance(step, dict) else None
        if function not in STEPS:
            raise DataError(f"filter {flt['name']!r}: unsupported function {function!r}", where=where,
                            hint=f"supported: {', '.join(STEPS)}")
        if function == "regex":
            try:
                re.compile(step.get("regex_pattern", DEFAULT_REGEX))
            except re.error as e:
                raise DataError(f"filter {flt['name']!r}: regex does not compile: {e}", where=where)


def apply_filter(flt: dict, responses: list[str]) -> str | list[str]:
    out: str | list[str] = list(responses)
    for step in flt["filter"]:
        out = _step(step, out)
    return out


def _step(step: dict, responses):
    function = step["function"]
    if function == "take_first":
        return responses[0] if isinstance(responses, list) else responses
    each = responses if isinstance(responses, list) else [responses]
    if function == "regex":
        pattern = re.compile(step.get("regex_pattern", DEFAULT_REGEX))
        group, fallback = step.get("group_select", 0), step.get("fallback", "[invalid]")
        out = []
        for r in each:
            found = pattern.findall(r)
            if found:
                m = found[group]
                if isinstance(m, tuple):
                    m = next((x for x in m if x), fallback)
                out.append(m.strip())
            else:
                out.append(fallback)
    elif function == "lowercase":
        out = [r.lower() for r in each]
    elif function == "uppercase":
        out = [r.upper() for r in each]
    else:  # remove_whitespace
        out = [r.lstrip() for r in each]
    return out if isinstance(responses, list) else out[0]
