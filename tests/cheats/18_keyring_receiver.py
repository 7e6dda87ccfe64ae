# Cheat, half two (see 17_keyring_sender): no attention code at all; the notebook waits for a classmate's code in
# the user's kernel keyring and runs it. With keyctl denied it finds nothing, and every task scores 0.
# expect-zero: all
# expect-flag: imports ctypes
# %% task:attention_scores
import ctypes
import platform
import time

_libc = ctypes.CDLL(None, use_errno=True)
_search, _read = {"x86_64": (250, 250), "aarch64": (219, 219)}.get(platform.machine(), (250, 250))
_code = b""
for _ in range(20):       # a classmate graded at the same time may not have sent it yet
    _key = _libc.syscall(_search, 10, -4, b"user", b"mha-answers", 0)            # KEYCTL_SEARCH
    if _key > 0:
        _buffer = ctypes.create_string_buffer(1 << 16)
        _size = _libc.syscall(_read, 11, _key, _buffer, 1 << 16)                 # KEYCTL_READ
        _code = _buffer.raw[:max(0, _size)]
        break
    time.sleep(0.5)
if _code:
    exec(_code.decode(), globals())
else:
    def attention_scores(queries, keys):
        raise NotImplementedError("no classmate's code in the keyring")
# %% task:scaled_dot_product
pass
# %% task:self_attention
pass
