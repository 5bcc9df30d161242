/* Error case: division by zero in a constant expression (yara 4.2.3 rejects this file; so must we). */
rule a { condition: 1 \ 0 == 0 }
