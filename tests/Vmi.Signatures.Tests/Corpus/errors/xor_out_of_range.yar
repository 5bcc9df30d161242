/* Error case: xor key above 255 (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" xor(300) condition: $x }
