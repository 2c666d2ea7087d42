"""Byte helpers shared by the compiled ingest modules, textually included (``include``) by
each: a relative ``cimport`` of a .pxd cannot resolve here, because the extensions are named
``n3xus.ledger.*`` while the sources sit in ``ledger/`` (setup.py maps the namespace).

State values are big-endian u64; hot keys are built with one allocation each."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLongLong
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

cdef enum:
    SEQ_BYTES = 8  # u64 big-endian in head records and chain keys


cdef inline uint64_t _be64(const unsigned char *p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline void _put_be64(unsigned char *p, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = <unsigned char>(value & 0xFF)
        value >>= 8


cdef inline object _u64_value(object raw):
    """``int.from_bytes(raw, "big")`` (in C for the usual 8 bytes)."""
    if PyBytes_CheckExact(raw) and PyBytes_GET_SIZE(raw) == 8:
        return PyLong_FromUnsignedLongLong(_be64(<const unsigned char*>PyBytes_AS_STRING(raw)))
    return int.from_bytes(raw, "big")


cdef inline bytes _u64_bytes(uint64_t value):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8)
    _put_be64(<unsigned char*>PyBytes_AS_STRING(out), value)
    return out


cdef inline bytes _concat(bytes a, bytes b):
    """``a + b`` (kept explicit so the hot keys are built with one allocation)."""
    cdef Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, la + lb)
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(a), la)
    memcpy(p + la, PyBytes_AS_STRING(b), lb)
    return out


cdef inline bytes _with_seq(bytes head, uint64_t seq, bytes tail):
    """``head || seq u64 || tail`` in one allocation."""
    cdef Py_ssize_t lh = PyBytes_GET_SIZE(head), lt = PyBytes_GET_SIZE(tail)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, lh + SEQ_BYTES + lt)
    cdef unsigned char *p = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), lh)
    _put_be64(p + lh, seq)
    memcpy(p + lh + SEQ_BYTES, PyBytes_AS_STRING(tail), lt)
    return out
