/* Error case: undefined identifier (yara 4.2.3 rejects this file; so must we). */
rule a { condition: foo }
