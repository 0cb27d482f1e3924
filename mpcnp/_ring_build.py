"""cffi builder for mpcnp._ring, the compiled kernels: _ring.c (GEMM) and _zp.c (SecureNN's Z_p),
two translation units linked into one extension.

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
int64_t mpcnp_zp_uniform(const uint16_t *v, int64_t n, uint32_t m, uint8_t offset, uint8_t *out,
                         int64_t *rejected);
void mpcnp_zp_bit_shares(const uint64_t *x, int64_t n, int rows, const uint8_t *share0, int64_t ld0,
                         uint8_t *share1, int64_t ld1);
void mpcnp_zp_any_zero(int rows, int64_t n, const uint8_t *d0, int64_t ld0, const uint8_t *d1, int64_t ld1,
                       uint8_t *out);
void mpcnp_zp_compare_masks(int j, int rows, int64_t m, const uint8_t *x, int64_t ldx, const uint64_t *r,
                            const uint8_t *beta, const uint8_t *s, int64_t lds, const uint8_t *u, int64_t ldu,
                            const uint8_t *g, uint8_t *d, int64_t ldd);
"""

_here = Path(__file__).resolve().parent
_compile_args = ["-O3", "-std=c11", "-fno-math-errno"]
if platform.machine().lower() in ("x86_64", "amd64"):
    _compile_args.append("-mtune=generic")

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mpcnp._ring",
    "#include <stdint.h>\n" + CDEF,  # the prototypes; the bodies are in the sources
    sources=[str(_here / "_ring.c"), str(_here / "_zp.c")],
    extra_compile_args=_compile_args,
    libraries=["pthread"],
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
