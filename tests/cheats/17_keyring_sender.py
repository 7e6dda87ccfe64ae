# Cheat, half one of a channel between kernels (issue 23): an honest solution that also puts its code into the
# kernel keyring of its user, where every kernel of the run (all running as the same user) could read it. The
# filter denies add_key: the student keeps exactly the honest score, and nothing reaches a classmate.
# expect-flag: imports ctypes
# %% end
import ctypes
import inspect

_libc = ctypes.CDLL(None, use_errno=True)
_code = "\n".join(inspect.getsource(f) for f in (attention_scores, scaled_dot_product, SelfAttention)).encode()
# add_key("user", "mha-answers", code, len, KEY_SPEC_USER_KEYRING) on x86_64 (248) and aarch64 (217)
_nr = {"x86_64": 248, "aarch64": 217}.get(__import__("platform").machine(), 248)
print("add_key:", _libc.syscall(_nr, b"user", b"mha-answers", _code, len(_code), -4), ctypes.get_errno())
