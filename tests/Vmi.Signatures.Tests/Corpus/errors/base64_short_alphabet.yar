/* Error case: custom base64 alphabet must be 64 bytes (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" base64("ABC") condition: $x }
