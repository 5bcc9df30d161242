/* Error case: anonymous strings cannot be referenced by name (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $ = "abc" condition: $ }
