/* Error case: duplicated modifier (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = "abc" wide wide condition: $x }
