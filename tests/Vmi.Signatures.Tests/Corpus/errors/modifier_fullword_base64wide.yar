/* Error case: invalid modifier combination fullword + base64wide (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abcdef" fullword base64wide condition: $x }
