/* Error case: invalid regular expression (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = /ab(c/ condition: $x }
