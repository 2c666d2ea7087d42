"""What an SDP offer asks for, checked before aiortc sees it (sans-IO).

The node only answers offers it can serve: media it can forward (VP8 video, Opus
audio), at most one section per kind, publishing only for roles that may publish.
A refused offer gets a clear error and changes nothing: no peer connection is
created for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CodecError, ForbiddenError, SignalingError

#: An SDP this long is not a browser's offer of one audio, one video and one data
#: section (Chromium's are 3-6 kB with host candidates).
MAX_SDP_BYTES = 32 * 1024
#: The relay forwards one performer track per kind; more sections would be ignored.
MAX_MEDIA_SECTIONS_PER_KIND = 1
#: Codec (rtpmap encoding name, upper case) the relay forwards, per media kind.
FORWARDED_CODEC = {"video": "VP8", "audio": "OPUS"}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str
    direction: str
    codecs: tuple[str, ...]
    port_zero: bool

    @property
    def offerer_sends(self) -> bool:
        return not self.port_zero and self.direction in ("sendrecv", "sendonly")

    @property
    def offerer_receives(self) -> bool:
        return not self.port_zero and self.direction in ("sendrecv", "recvonly")


@dataclass(frozen=True, slots=True)
class OfferPlan:
    """What the node will do with an offer."""

    publish: frozenset[str] = field(default_factory=frozenset)
    watch: frozenset[str] = field(default_factory=frozenset)
    data_channel: bool = False


def media_sections(sdp: str) -> list[MediaSection]:
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise SignalingError(f"SDP larger than {MAX_SDP_BYTES} bytes", code="too-large")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].startswith("v=0"):
        raise SignalingError("SDP must begin with v=0")
    session_direction = "sendrecv"
    sections: list[dict[str, object]] = []
    for line in lines[1:]:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 3:
                raise SignalingError(f"malformed SDP media line {line[:80]!r}")
            sections.append({"kind": parts[0], "port": parts[1], "direction": None, "codecs": []})
        elif line.startswith("a="):
            attr = line[2:]
            if attr in DIRECTIONS:
                if sections:
                    sections[-1]["direction"] = attr
                else:
                    session_direction = attr
            elif attr.startswith("rtpmap:") and sections:
                try:
                    name = attr.split(None, 1)[1].split("/", 1)[0].upper()
                except IndexError:
                    raise SignalingError(f"malformed SDP rtpmap {line[:80]!r}") from None
                codecs = sections[-1]["codecs"]
                assert isinstance(codecs, list)
                codecs.append(name)
    result = []
    for s in sections:
        codecs = s["codecs"]
        assert isinstance(codecs, list)
        direction = s["direction"] or session_direction
        assert isinstance(direction, str)
        result.append(MediaSection(str(s["kind"]), direction, tuple(codecs), s["port"] == "0"))
    return result


def plan_offer(sdp: str, *, may_publish: bool, may_watch: bool = True) -> OfferPlan:
    """Decide what to do with an offer, or raise the error the peer gets."""
    sections = media_sections(sdp)
    if not sections:
        raise SignalingError("SDP offer has no media or data section")
    publish: set[str] = set()
    watch: set[str] = set()
    data_channel = False
    seen: dict[str, int] = {}
    for section in sections:
        if section.kind == "application":
            data_channel = data_channel or not section.port_zero
            continue
        if section.kind not in FORWARDED_CODEC:
            raise CodecError(f"unsupported media kind {section.kind!r}")
        seen[section.kind] = seen.get(section.kind, 0) + 1
        if seen[section.kind] > MAX_MEDIA_SECTIONS_PER_KIND:
            raise SignalingError(f"more than {MAX_MEDIA_SECTIONS_PER_KIND} {section.kind} section")
        if not (section.offerer_sends or section.offerer_receives):
            continue
        wanted = FORWARDED_CODEC[section.kind]
        if wanted not in section.codecs:
            raise CodecError(
                f"{section.kind} section offers {', '.join(section.codecs) or 'no codec'}; "
                f"the relay forwards only {wanted}"
            )
        if section.offerer_sends:
            if not may_publish:
                raise ForbiddenError("this room token may not publish media")
            publish.add(section.kind)
        if section.offerer_receives:
            if not may_watch:
                raise ForbiddenError("this room token may not watch")
            watch.add(section.kind)
    if not (publish or watch or data_channel):
        raise SignalingError("SDP offer sends and receives nothing")
    return OfferPlan(frozenset(publish), frozenset(watch), data_channel)
