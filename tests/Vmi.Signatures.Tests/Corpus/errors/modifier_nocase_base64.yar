/* Error case: invalid modifier combination nocase + base64 (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" nocase base64 condition: $x }
