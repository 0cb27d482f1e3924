"""cffi builder for mpcnp._ring, the compiled ring kernels (see _ring.c).

Used by setup.py through ``cffi_modules``. The extension is marked optional: if it cannot be compiled,
installation continues and mpcnp uses its NumPy kernels.
"""
import platform
from pathlib import Path

from cffi import FFI

CDEF = """
int mpcnp_matmul(const uint64_t *a, const int64_t *a_off, int64_t a_rs, int64_t a_cs,
                 const uint64_t *b, const int64_t *b_off, int64_t b_rs, int64_t b_cs,
                 uint64_t *c, int64_t batch, int64_t m, int64_t n, int64_t k,
                 int kernel, int nthreads);
int mpcnp_has_avx512(void);
"""

_here = Path(__file__).resolve().parent
_compile_args = ["-O3", "-std=c11", "-fno-math-errno"]
if platform.machine().lower() in ("x86_64", "amd64"):
    _compile_args.append("-mtune=generic")

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mpcnp._ring",
    (_here / "_ring.c").read_text(),
    extra_compile_args=_compile_args,
    libraries=["pthread"],
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
