"""A small ctypes binding over libnftables.so.1 (Debian: libnftables1).

libnftables has no network-namespace argument: a context talks to the
namespace of the thread that *creates* it.  Measured on nftables 1.0.6 (see
tests/integration/test_firewall.py::test_context_netns_binding): the netlink
socket is opened by nft_ctx_new() and kept for the context's life, so a
context created in namespace A still talks to A when later called from a
thread that has moved to B.  The engine creates the context inside the
namespace's worker thread and uses it only there.  Because another libnftables
version could open its socket per call (and then silently talk to whatever
namespace the caller is in, possibly the root one), every call also checks that
the calling thread is in the namespace the context was created in (one stat of
/proc/thread-self/ns/net, a few microseconds) and refuses otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import threading

from muslin.errors import KernelError

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    """Load libnftables once (lazily, so importing muslin stays cheap)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        names = ["libnftables.so.1"]
        found = ctypes.util.find_library("nftables")
        if found and found not in names:
            names.append(found)
        lib = None
        for name in names:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                break
            except OSError:
                continue
        if lib is None:
            raise KernelError("libnftables is not installed (apt-get install libnftables1)")
        vp, cp, u32, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int
        for fname, restype, argtypes in (
            ("nft_ctx_new", vp, [u32]),
            ("nft_ctx_free", None, [vp]),
            ("nft_ctx_output_get_flags", u32, [vp]),
            ("nft_ctx_output_set_flags", None, [vp, u32]),
            ("nft_ctx_buffer_output", i, [vp]),
            ("nft_ctx_buffer_error", i, [vp]),
            ("nft_ctx_get_output_buffer", cp, [vp]),
            ("nft_ctx_get_error_buffer", cp, [vp]),
            ("nft_run_cmd_from_buffer", i, [vp, cp]),
        ):
            fn = getattr(lib, fname)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = lib
        return lib


def _thread_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


class Nftables:
    """One libnftables context, bound to the network namespace of the creating thread.

    Not thread-safe: create and use it in one thread (the namespace's worker).
    """

    def __init__(self) -> None:
        lib = _load()
        self._lib = lib
        self.netns = _thread_netns()
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise KernelError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            lib.nft_ctx_free(ctx)
            self._ctx = None
            raise KernelError("libnftables: cannot buffer output")
        self._base_flags = lib.nft_ctx_output_get_flags(ctx)
        # kernel features probed through this context (e.g. firewall.bridge_meta_supported)
        self.features: dict[str, bool] = {}

    def _run(self, text: str, json_output: bool) -> str:
        ctx = self._ctx
        if ctx is None:
            raise KernelError("nftables context is closed")
        if _thread_netns() != self.netns:
            raise KernelError(
                "nftables context used from a thread in another network namespace than the one it was created in"
            )
        lib = self._lib
        flags = self._base_flags | NFT_CTX_OUTPUT_JSON if json_output else self._base_flags
        lib.nft_ctx_output_set_flags(ctx, flags)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        # The buffers are reset by the next call; read both now.
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise _error(err, text)
        return out

    def cmd(self, text: str) -> str:
        """Run commands in nft syntax (several separated by newlines or ';'), return nft's output."""
        return self._run(text, json_output=False)

    def json_cmd(self, obj: dict) -> dict:
        """Run a libnftables JSON document ({"nftables": [...]}) as one batch; return the parsed output.

        Commands with no output (add, delete, flush, ...) return {"nftables": []}.
        """
        out = self._run(json.dumps(obj, separators=(",", ":")), json_output=True)
        out = out.strip()
        if not out:
            return {"nftables": []}
        try:
            return json.loads(out)
        except ValueError as e:  # pragma: no cover - libnftables always prints JSON here
            raise KernelError(f"nft: unparsable JSON output: {e}") from None

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._lib.nft_ctx_free(ctx)

    def __enter__(self) -> "Nftables":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a context left open keeps a netlink socket (and its netns) alive
        try:
            self.close()
        except Exception:
            pass


def _error(err: str, text: str) -> KernelError:
    """One line for the user (nft's "Error: ..." lines), the whole buffer in .detail."""
    # nft syntax: "Error: ..." then the command and a caret line;
    # JSON input: "internal:0:0-0: Error: ..." (one per failing command).
    lines = [ln[ln.index("Error:"):].strip() for ln in err.splitlines() if "Error:" in ln]
    if not lines:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()][:1] or ["command failed"]
    # libnftables repeats the same error once per failing object in a batch
    uniq = list(dict.fromkeys(lines))[:3]  # after the first few, nft's errors are consequences
    msg = "nft: " + "; ".join(ln.removeprefix("Error: ") for ln in uniq)
    e = KernelError(msg)
    e.detail = err  # type: ignore[attr-defined]
    e.command = text  # type: ignore[attr-defined]
    return e
