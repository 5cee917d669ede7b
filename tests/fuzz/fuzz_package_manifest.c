/* libFuzzer harness: a package's MANIFEST.json (lg_pkg_manifest_parse, formats/package_manifest.h):
 * an accepted manifest has plain, unique names and stored names, and transform parameters the
 * byte-plane decoder accepts. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "package_manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_err err;
    lg_pkg_manifest m;
    if (lg_pkg_manifest_parse((const char *)data, size, "MANIFEST.json", &m, &err) != 0) {
        if (strncmp(err.msg, "MANIFEST.json", 13) != 0)
            __builtin_trap();
        return 0;
    }
    for (int i = 0; i < m.n_files; i++) {
        const lg_pkg_file *f = &m.files[i];
        if (!lg_pkg_name_ok(f->name) || !lg_pkg_name_ok(f->stored_name))
            __builtin_trap();
        if (f->bp.transform && (f->bp.chunk < 2 || f->bp.chunk % 2 || f->bp.chunk > LG_PKG_MAX_CHUNK ||
                                f->bp.skip > f->size))
            __builtin_trap();
        for (int k = 0; k < i; k++)
            if (strcmp(m.files[k].name, f->name) == 0 || strcmp(m.files[k].stored_name, f->stored_name) == 0)
                __builtin_trap();
    }
    lg_pkg_manifest_free(&m);
    return 0;
}
