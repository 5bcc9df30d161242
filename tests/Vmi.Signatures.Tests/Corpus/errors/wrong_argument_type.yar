/* Error case: uint8 of a string (yara 4.2.3 rejects this file; so must we). */
rule a { condition: uint8("abc") == 1 }
