"""JSON Schema ``format`` names as regexes over the decoded string value.

:func:`format_regex` gives a Python regex (``re.fullmatch`` semantics) for each format whose language
is regular, written from the RFC that defines it. The contract is *no false positives*: every string
a regex accepts is valid for ``jsonschema.FormatChecker()`` (with the ``format-nongpl`` extras) and for
the JSON Schema Test Suite. Where the checker is stricter than the RFC we follow the checker (no leap
seconds, year 0000 rejected, no IRIs beyond the Basic Multilingual Plane), and where the RFC's
language is not regular or the checker's rules are out of reach we accept a regular subset or return
None:

* ``hostname`` / ``idn-hostname``: RFC 1123 labels (letters, digits, inner hyphens, at most 63) with
  no ``--`` in positions 3 and 4 (that is, no A-labels: checking Punycode is not regular); ASCII only.
  Their total length limit (253) is *not* in the regex: intersect with :func:`format_max_length`.
* ``idn-email``: ``email`` with any non-ASCII character allowed in the local part and domain labels.
* ``iri`` / ``iri-reference``: RFC 3987 with ``ucschar`` limited to the BMP and IPv6 literals limited
  to the forms the checker's grammar has (all 8 groups, or 7 and ``::``).
* ``regex`` (ECMA-262 syntax is not regular) and unknown names: None; the caller decides.

Regexes use only ASCII-range classes or explicit code point ranges, so they mean the same with or
without ``re.ASCII``.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

_HEX = "[0-9A-Fa-f]"
_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"  # no leading zeros (RFC 3986, ipaddress)
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"


def _ipv6() -> str:
    """RFC 3986 ``IPv6address``: eight 16-bit groups, ``::`` for one or more zero groups, IPv4 tail."""
    h16 = f"{_HEX}{{1,4}}"
    ls32 = f"(?:{h16}:{h16}|{_IPV4})"
    forms = [
        f"(?:{h16}:){{6}}{ls32}",
        f"::(?:{h16}:){{5}}{ls32}",
        f"(?:{h16})?::(?:{h16}:){{4}}{ls32}",
    ]
    for before, after in ((1, 3), (2, 2), (3, 1)):
        forms.append(f"(?:(?:{h16}:){{0,{before}}}{h16})?::(?:{h16}:){{{after}}}{ls32}")
    forms += [
        f"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}",
        f"(?:(?:{h16}:){{0,5}}{h16})?::{h16}",
        f"(?:(?:{h16}:){{0,6}}{h16})?::",
    ]
    return "(?:" + "|".join(forms) + ")"


_IPV6 = _ipv6()


def _ipv6_rfc3987_syntax() -> str:
    """The IPv6 literals of the checker's RFC 3987 grammar (``rfc3987-syntax``): 8 groups, or 7 and ``::``."""
    h16 = f"{_HEX}{{1,4}}"
    ls32 = f"(?:{h16}:{h16}|{_IPV4})"
    forms = [f"(?:{h16}:){{6}}{ls32}", f"::(?:{h16}:){{5}}{ls32}"]
    for before in range(1, 6):  # h16 x before, "::", then the rest up to 7 groups with ls32 last
        forms.append(f"(?:{h16}:){{{before - 1}}}{h16}::(?:{h16}:){{{5 - before}}}{ls32}")
    forms += [f"(?:{h16}:){{5}}{h16}::{h16}", f"(?:{h16}:){{6}}{h16}::"]
    return "(?:" + "|".join(forms) + ")"


# --- RFC 3339 date and time ------------------------------------------------------------------

_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0000 is rejected by the checker
# Leap years by their digits: divisible by 4 and not a century (last two digits), or a century whose
# first two digits are divisible by 4.
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
# No leap second: the checker (rfc3339-validator) rejects ":60".
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_DATE_TIME = f"{_DATE}[Tt]{_TIME}"

# --- RFC 3339 Appendix A duration ------------------------------------------------------------

_DUR_TIME = "T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
_DUR_DATE = f"(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)(?:{_DUR_TIME})?"
_DURATION = f"P(?:{_DUR_DATE}|{_DUR_TIME}|[0-9]+W)"

# --- hostnames and e-mail (RFC 1123, RFC 5321 / 6531) -----------------------------------------

_ALNUM = "[A-Za-z0-9]"
_LDH = "[A-Za-z0-9-]"
# 1-63 characters, letters/digits at both ends, and never "--" in positions 3-4 (reserved for
# A-labels, whose Punycode we cannot check).
_LABEL = (
    f"(?:{_ALNUM}(?:{_LDH}?{_ALNUM})?"  # 1 to 3 characters
    f"|{_ALNUM}{_LDH}{_LDH}{_ALNUM}"  # 4: position 4 is a letter or digit
    f"|{_ALNUM}{_LDH}(?:{_ALNUM}{_LDH}|-{_ALNUM}){_LDH}{{0,58}}{_ALNUM})"  # 5 to 63
)
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*"

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_DOMAIN_LABEL = f"{_ALNUM}(?:{_LDH}*{_ALNUM})?"
_ADDRESS_LITERAL = rf"\[(?:{_IPV4}|IPv6:{_IPV6})\]"
_EMAIL = (
    rf"(?:{_ATEXT}+(?:\.{_ATEXT}+)*|{_QUOTED})@(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|{_ADDRESS_LITERAL})"
)

# One class per position (not an alternation of classes): smaller automata, faster to sample.
_NON_ASCII = r"\x80-\ud7ff\ue000-\U0010ffff"
_IDN_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_NON_ASCII}-]"
_IDN_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_IDN_ALNUM = f"[A-Za-z0-9{_NON_ASCII}]"
_IDN_DOMAIN_LABEL = rf"{_IDN_ALNUM}(?:[A-Za-z0-9{_NON_ASCII}-]*{_IDN_ALNUM})?"
_IDN_EMAIL = (
    rf"(?:{_IDN_ATEXT}+(?:\.{_IDN_ATEXT}+)*|{_IDN_QUOTED})"
    rf"@(?:{_IDN_DOMAIN_LABEL}(?:\.{_IDN_DOMAIN_LABEL})*|{_ADDRESS_LITERAL})"
)

# --- RFC 3986 URI / RFC 3987 IRI -------------------------------------------------------------

_UCSCHAR_BMP = r"\xa0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"  # the checker's grammar stops at the BMP
_IPRIVATE_BMP = r"\ue000-\uf8ff"


def _uri_regexes(iri: bool) -> tuple[str, str]:
    """(absolute URI/IRI, URI/IRI reference) from the RFC 3986 / 3987 ABNF, rule by rule."""
    ucs = _UCSCHAR_BMP if iri else ""
    pct = f"%{_HEX}{{2}}"
    unreserved = rf"[A-Za-z0-9\-._~{ucs}]"
    sub_delims = r"[!$&'()*+,;=]"
    pchar = rf"(?:[A-Za-z0-9\-._~{ucs}!$&'()*+,;=:@]|{pct})"
    seg_nz_nc = rf"(?:[A-Za-z0-9\-._~{ucs}!$&'()*+,;=@]|{pct})+"
    query = rf"(?:[A-Za-z0-9\-._~{ucs}{_IPRIVATE_BMP if iri else ''}!$&'()*+,;=:@/?]|{pct})*"
    fragment = rf"(?:[A-Za-z0-9\-._~{ucs}!$&'()*+,;=:@/?]|{pct})*"
    userinfo = rf"(?:[A-Za-z0-9\-._~{ucs}!$&'()*+,;=:]|{pct})*"
    ipv6 = _ipv6_rfc3987_syntax() if iri else _IPV6
    ip_literal = rf"\[(?:{ipv6}|v{_HEX}+\.(?:[A-Za-z0-9\-._~!$&'()*+,;=:])+)\]"
    reg_name = rf"(?:{unreserved}|{pct}|{sub_delims})*"
    authority = rf"(?:{userinfo}@)?(?:{ip_literal}|{reg_name})(?::[0-9]*)?"
    path_abempty = f"(?:/{pchar}*)*"
    path_absolute = f"/(?:{pchar}+(?:/{pchar}*)*)?"
    path_rootless = f"{pchar}+(?:/{pchar}*)*"
    path_noscheme = f"{seg_nz_nc}(?:/{pchar}*)*"
    tail = rf"(?:\?{query})?(?:#{fragment})?"
    scheme = "[A-Za-z][A-Za-z0-9+.-]*"
    absolute = f"{scheme}:(?://{authority}{path_abempty}|{path_absolute}|{path_rootless}|){tail}"
    relative = f"(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme}|){tail}"
    return absolute, f"(?:{absolute}|{relative})"


_URI, _URI_REFERENCE = _uri_regexes(iri=False)
_IRI, _IRI_REFERENCE = _uri_regexes(iri=True)

# --- RFC 6570 URI Template (level 4) ---------------------------------------------------------

# Literals: RFC 6570 section 2.1 plus "'" (the checker and the Test Suite accept it), any non-ASCII
# character outside the surrogates, and percent-encodings.
_TEMPLATE_LITERAL = rf"(?:[!#$&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]|[\xa0-\ud7ff\ue000-\U0010ffff]|%{_HEX}{{2}})"
# RFC 6570 varspec, narrowed to what the checker (uri-template) takes: a name starts with a letter,
# digit or "_" (not a %-encoding) and a prefix length has at most 3 digits.
_VARCHAR = f"(?:[A-Za-z0-9_]|%{_HEX}{{2}})"
_VARSPEC = rf"[A-Za-z0-9_](?:\.?{_VARCHAR})*(?::[1-9][0-9]{{0,2}}|\*)?"
_EXPRESSION = rf"\{{[+#./;?&]?{_VARSPEC}(?:,{_VARSPEC})*\}}"
_URI_TEMPLATE = f"(?:{_TEMPLATE_LITERAL}|{_EXPRESSION})*"

# --- JSON Pointer (RFC 6901) and Relative JSON Pointer ---------------------------------------

_JSON_POINTER = r"(?:/(?:[^~/]|~[01])*)*"
# The checker rejects a digit after a "0" anywhere in the prefix ("100" fails), so zeros only last.
_RELATIVE_JSON_POINTER = rf"(?:0|[1-9]+0?)(?:#|{_JSON_POINTER})"

_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"

_FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE_TIME,
    "duration": _DURATION,
    "email": _EMAIL,
    "idn-email": _IDN_EMAIL,
    "hostname": _HOSTNAME,
    "idn-hostname": _HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uri": _URI,
    "uri-reference": _URI_REFERENCE,
    "iri": _IRI,
    "iri-reference": _IRI_REFERENCE,
    "uuid": _UUID,
    "json-pointer": _JSON_POINTER,
    "relative-json-pointer": _RELATIVE_JSON_POINTER,
    "uri-template": _URI_TEMPLATE,
}

_MAX_LENGTH = {"hostname": 253, "idn-hostname": 253}

#: Formats whose language is not regular: there is no regex, by design rather than by omission.
NOT_REGULAR = frozenset({"regex"})


def format_regex(name: str) -> str | None:
    """A regex (``re.fullmatch``, over the decoded string) for the JSON Schema format ``name``, or None.

    None means "no regex": the format is not regular (``regex``) or not known here; the caller decides
    whether to ignore the keyword or refuse the schema. Every string the regex accepts passes
    ``jsonschema.FormatChecker()``; see the module docstring for where a regex is a strict subset of
    the format, and :func:`format_max_length` for the length limit the regex leaves out.
    """
    return _FORMATS.get(name)


def format_max_length(name: str) -> int | None:
    """A length limit (in characters) that holds besides :func:`format_regex`, or None if there is none.

    ``hostname`` and ``idn-hostname`` are at most 253 characters long; a regex cannot say that and
    "labels of at most 63" compactly at once, so the caller intersects the two languages.
    """
    return _MAX_LENGTH.get(name)
