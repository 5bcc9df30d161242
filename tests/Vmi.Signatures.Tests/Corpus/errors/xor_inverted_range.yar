/* Error case: xor(min-max) with min > max (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" xor(0x20-0x10) condition: $x }
