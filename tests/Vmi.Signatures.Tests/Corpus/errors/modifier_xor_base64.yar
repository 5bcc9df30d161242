/* Error case: invalid modifier combination xor + base64 (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" xor base64 condition: $x }
