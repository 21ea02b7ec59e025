"""Text from outside made safe to write into XML: the one place it happens.

XML 1.0 allows only #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and
#x10000-#x10FFFF (https://www.w3.org/TR/xml/#charsets). Anything else in an
upstream title or a user's query would make lxml refuse the whole feed, so it
is dropped where the text enters the model: in parsing (every upstream text
field) and in params (`q`). One character class, one linear pass.
"""

from __future__ import annotations

import re

_FORBIDDEN_IN_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    return _FORBIDDEN_IN_XML.sub("", text)
