/* Error case: unknown escape sequence in a text string (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "a\qb" condition: $x }
