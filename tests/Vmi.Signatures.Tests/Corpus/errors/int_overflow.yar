/* Error case: integer overflow in a constant expression (yara 4.2.3 rejects this file; so must we). */
rule a { condition: 0x7FFFFFFFFFFFFFFF + 1 > 0 }
