/* Error case: unbounded jump inside an alternative (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 11 ( 22 [-] 33 | 44 ) 55 } condition: $x }
