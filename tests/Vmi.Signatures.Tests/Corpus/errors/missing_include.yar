/* Error case: include of a missing file (yara 4.2.3 rejects this file; so must we). */
include "does_not_exist.yar"
